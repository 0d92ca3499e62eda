//! Enforcement end to end through the real binary: the SPEC §11 examples, thresholds under both
//! regimes, races against a volume, observe mode, reloads, a failing ledger disk, `kill -9`
//! during streaming, and no identifier anywhere outside the request path.

use crate::harness::approvals::{approval, eu, CATEGORIES};
use crate::harness::upstream::Upstream;
use crate::harness::{eventually, poll_until, GateBuilder, GateProc};
use std::collections::HashSet;
use std::time::Duration;
use transfer_gate::model::Regime;

const URL: &str = "http://api.eu.test/v1/ingest";

/// A JSON array of `n` records with user ids `from..from+n`.
fn users(from: u64, n: u64) -> String {
    let mut s = String::with_capacity((n as usize) * 16 + 2);
    s.push('[');
    for i in from..from + n {
        if i > from {
            s.push(',');
        }
        s.push_str(&format!("{{\"user_id\":{i}}}"));
    }
    s.push(']');
    s
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn spec_examples_count_subjects_as_specified() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .section(CATEGORIES)
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\", \"contact\", \"health\", \"identity\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    let r = gate
        .post_json(
            URL,
            r#"[{"user_id":1,"diagnosis":"x"},{"user_id":"1"},{"user_id":2}]"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (2, 1));
    let r = gate
        .post_json(
            URL,
            r#"{"batch":[{"user_id":7,"phone":"138 0013 8000"}],"contact":"+86 139-0013-9000"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        gate.entity_counts().await,
        (4, 1),
        "user 7 with its phone, and the loose phone"
    );
    let r = gate
        .post_json(URL, r#"{"name":"x","id_no":"11010519491231002X"}"#)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        gate.entity_counts().await,
        (5, 2),
        "a valid resident ID is a sensitive subject"
    );
    let r = gate
        .post_json(URL, r#"{"name":"x","id_no":"110105194912310021"}"#)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        gate.entity_counts().await,
        (5, 2),
        "a wrong check digit is no subject"
    );
    // Query and header identifiers count too.
    let r = gate
        .client()
        .get("http://api.eu.test/v1/profile?user_id=900")
        .header("x-user-id", "901")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        gate.entity_counts().await,
        (7, 2),
        "user_id=900 in the query and x-user-id: 901"
    );
}

#[tokio::test]
async fn cac2024_the_first_subject_past_99999_needs_a_contract() {
    let up = Upstream::builder().sink().start().await;
    let gate = GateBuilder::new()
        .section("[inspection]\natomic_body_bytes = 8388608")
        .destination(eu(up.addr))
        .start()
        .await;
    let r = gate.post_json(URL, users(1, 99_999)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (99_999, 0));
    let r = gate.post_json(URL, r#"{"user_id":100000}"#).await;
    assert_eq!(r.status(), 451);
    let v = json(r).await;
    assert_eq!(v["reason"], "approval_required");
    assert_eq!(
        v["required_mechanism"],
        "standard_contract_or_certification"
    );
    assert_eq!(v["threshold"], "subjects_100000");
    assert_eq!(v["destination"], "eu");
    let r = gate.post_json(URL, r#"{"user_id":5}"#).await;
    assert_eq!(r.status(), 200, "an already-counted subject passes");
    assert_eq!(
        up.received().len(),
        2,
        "the refused request never reached the upstream"
    );
    assert_eq!(gate.entity_counts().await, (99_999, 0));
    let text = gate.metrics().await;
    assert!(
        text.contains(
            "transfer_gate_threshold_utilization_ratio{threshold=\"subjects_100000\"} 0.99999"
        ),
        "{text}"
    );
    assert!(text.contains("transfer_gate_required_mechanism{mechanism=\"none\"} 1"));
}

#[tokio::test]
async fn cac2022_a_contract_stops_at_100000() {
    let up = Upstream::builder().sink().start().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2022\"")
        .section("[inspection]\natomic_body_bytes = 8388608")
        .approvals(&approval(
            "SCC-EU",
            "standard_contract",
            "\"basic\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    assert_eq!(gate.post_json(URL, users(1, 99_990)).await.status(), 200);
    let r = gate.post_json(URL, users(200_000, 20)).await;
    assert_eq!(r.status(), 451);
    let v = json(r).await;
    assert_eq!(
        (
            v["reason"].as_str(),
            v["required_mechanism"].as_str(),
            v["threshold"].as_str()
        ),
        (
            Some("approval_required"),
            Some("security_assessment"),
            Some("subjects_100000")
        )
    );
    assert_eq!(
        gate.entity_counts().await,
        (99_990, 0),
        "counts stay where they were"
    );
    // Without any approval, any PI needs a contract under cac-2022.
    let up2 = Upstream::http().await;
    let bare = GateBuilder::new()
        .entity("regime = \"cac-2022\"")
        .destination(eu(up2.addr))
        .start()
        .await;
    let v = json(bare.post_json(URL, r#"{"user_id":1}"#).await).await;
    assert_eq!(
        (v["reason"].as_str(), v["required_mechanism"].as_str()),
        (
            Some("approval_required"),
            Some("standard_contract_or_certification")
        )
    );
    assert!(up2.received().is_empty());
    // No PI needs nothing.
    assert_eq!(
        bare.post_json(URL, r#"{"event":"ping"}"#).await.status(),
        200
    );
}

#[tokio::test]
async fn sensitive_data_categories_and_approval_states() {
    let up = Upstream::http().await;
    let pending = "[[approval]]\nid = \"P-1\"\nmechanism = \"standard_contract\"\nstatus = \"pending\"\ndestinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\n";
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .approvals(pending)
        .destination(eu(up.addr))
        .start()
        .await;
    let v = json(
        gate.post_json(URL, r#"{"user_id":1,"diagnosis":"flu"}"#)
            .await,
    )
    .await;
    assert_eq!(
        (v["reason"].as_str(), v["threshold"].as_str()),
        (Some("approval_pending"), Some("any_sensitive"))
    );
    // Non-sensitive PI needs nothing below 100,000.
    assert_eq!(gate.post_json(URL, r#"{"user_id":2}"#).await.status(), 200);

    let up = Upstream::http().await;
    let scc = approval(
        "SCC-1",
        "standard_contract",
        "\"basic\", \"contact\"",
        "2099-12-31",
        "max_subjects = 1000",
    );
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .approvals(&scc)
        .destination(eu(up.addr))
        .start()
        .await;
    let v = json(
        gate.post_json(URL, r#"{"user_id":1,"diagnosis":"flu"}"#)
            .await,
    )
    .await;
    assert_eq!(v["reason"], "category_not_approved");
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn racing_clients_never_overshoot_an_approved_volume() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\"",
            "2099-12-31",
            "max_subjects = 1000",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    let client = gate.client();
    let mut tasks = Vec::new();
    for c in 0..32u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for r in 0..3u64 {
                let from = 1 + (c * 3 + r) * 20;
                let resp = client
                    .post(URL)
                    .header("content-type", "application/json")
                    .body(users(from, 20))
                    .send()
                    .await
                    .unwrap();
                codes.push(resp.status().as_u16());
            }
            codes
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        for code in t.await.unwrap() {
            match code {
                200 => ok += 1,
                451 => refused += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let mut seen = HashSet::new();
    for r in up.received() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        for rec in v.as_array().unwrap() {
            seen.insert(rec["user_id"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seen.len(),
        1000,
        "the upstream received exactly the approved volume"
    );
    assert_eq!((ok, refused), (50, 46));
    assert_eq!(gate.entity_counts().await.0, 1000);
    let v = json(gate.post_json(URL, r#"{"user_id":999999}"#).await).await;
    assert_eq!(v["reason"], "approval_volume_exceeded");
    assert_eq!(
        gate.metric("transfer_gate_approval_remaining_subjects{approval=\"SA-1\",class=\"all\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn observe_mode_forwards_and_records_would_block() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .gate_key("mode = \"observe\"")
        .section(CATEGORIES)
        .destination(eu(up.addr))
        .start()
        .await;
    let r = gate
        .post_json(URL, r#"{"user_id":1,"diagnosis":"flu"}"#)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().len(), 1);
    assert_eq!(
        gate.entity_counts().await,
        (1, 1),
        "what was forwarded is counted"
    );
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"would_block\",destination=\"eu\",reason=\"approval_required\"}").await,
        1.0
    );
    let decisions: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gate.admin_url("/v1/decisions?limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(decisions["decisions"][0]["decision"], "would_block");
}

#[tokio::test]
async fn reload_with_a_broken_approvals_file_keeps_the_old_one() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .approvals(&approval(
            "SCC-1",
            "standard_contract",
            "\"basic\", \"health\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    assert_eq!(
        gate.post_json(URL, r#"{"user_id":1,"diagnosis":"flu"}"#)
            .await
            .status(),
        200
    );
    std::fs::write(gate.dir().join("approvals.toml"), "[[approval]]\nid = \"X\"\nmechanism = \"wish\"\nstatus = \"maybe\"\ndestinations = [\"eu\"]\n").unwrap();
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = admin
        .post(gate.admin_url("/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("approval[0].mechanism")),
        "{v}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("approval[0].status")),
        "{v}"
    );
    assert_eq!(
        gate.post_json(URL, r#"{"user_id":2,"diagnosis":"cold"}"#)
            .await
            .status(),
        200,
        "old approvals still apply"
    );
    assert_eq!(gate.entity_counts().await, (2, 2), "counts survive");
    // A valid file takes effect: the contract revoked.
    std::fs::write(
        gate.dir().join("approvals.toml"),
        approval(
            "SCC-1",
            "standard_contract",
            "\"basic\", \"health\"",
            "2099-12-31",
            "",
        )
        .replace("active", "revoked"),
    )
    .unwrap();
    assert_eq!(
        admin
            .post(gate.admin_url("/v1/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let v = json(
        gate.post_json(URL, r#"{"user_id":3,"diagnosis":"cold"}"#)
            .await,
    )
    .await;
    assert_eq!(v["reason"], "approval_revoked");
    assert_eq!(gate.entity_counts().await, (2, 2));
}

#[tokio::test]
async fn admin_api_needs_the_token_when_one_is_configured() {
    let gate = GateBuilder::new()
        .file("admin.token", b"0123456789abcdef-secret")
        .gate_key("admin_token_file = \"admin.token\"")
        .start()
        .await;
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        admin
            .get(gate.admin_url("/v1/status"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = admin
        .get(gate.admin_url("/v1/status"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = admin
        .get(gate.admin_url("/v1/status"))
        .bearer_auth("0123456789abcdef-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The CLI reads the same config.
    // (Its admin_listen has port 0: the CLI finds the bound address in data/listen.json.)
    let out = crate::harness::cli_on(&gate.config, &["status"]);
    let text = &out.stdout;
    assert!(out.success(), "{text}");
    assert!(
        text.contains("subjects_100000") && text.contains("required mechanism now: none"),
        "{text}"
    );
}

/// Mounts a small tmpfs (root only: CI runs as root) and unmounts it on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_ledger_disk_gives_503_for_pi_only() {
    let up = Upstream::http().await;
    let builder = GateBuilder::new().destination(eu(up.addr));
    let ledger_dir = builder.dir().join("data/ledger");
    let _fs = Tmpfs::mount(&ledger_dir, "1m");
    let gate = builder.start().await;
    assert_eq!(gate.post_json(URL, r#"{"user_id":1}"#).await.status(), 200);
    // Fill the disk.
    let filler = ledger_dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    let r = gate.post_json(URL, users(10, 500)).await;
    assert_eq!(r.status(), 503);
    let v = json(r).await;
    assert_eq!(v["reason"], "ledger_unavailable");
    let before = up.received().len();
    // Traffic without PI and domestic traffic go on.
    assert_eq!(
        gate.post_json(URL, r#"{"event":"ping"}"#).await.status(),
        200
    );
    assert_eq!(up.received().len(), before + 1);
    // Still ready (PI-free traffic must keep its endpoints); the ledger's state is the gauge.
    assert_eq!(gate.readyz().await, 200);
    gate.wait_ledger(false).await;
    assert!(
        gate.metric("transfer_gate_ledger_errors_total{backend=\"local\"}")
            .await
            >= 1.0
    );
    // Space again: the ledger recovers without a restart.
    std::fs::remove_file(&filler).unwrap();
    let ok = poll_until(Duration::from_secs(10), || async {
        (gate.post_json(URL, users(10, 500)).await.status() == 200).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "the ledger did not recover after space was freed"
    );
    gate.wait_ledger_up().await;
}

/// Streams NDJSON records `{"user_id":N}` for `from..` until the connection breaks or `n` are sent.
async fn stream_users(
    gate: &GateProc,
    from: u64,
    n: u64,
    per_chunk: u64,
    pause: Duration,
) -> reqwest::Result<reqwest::Response> {
    let chunks = n / per_chunk;
    let stream = futures_util::stream::iter(0..chunks).then(move |c| async move {
        tokio::time::sleep(pause).await;
        let mut s = String::with_capacity((per_chunk * 20) as usize);
        for i in 0..per_chunk {
            s.push_str(&format!("{{\"user_id\":{}}}\n", from + c * per_chunk + i));
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(s))
    });
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gate.proxy_url()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    client
        .post(URL)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
}

use futures_util::StreamExt as _;

/// The user ids of every complete record the upstream received.
fn received_ids(up: &Upstream) -> HashSet<u64> {
    let mut ids = HashSet::new();
    for r in up.received() {
        for line in r.body.split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(id) = v["user_id"].as_u64() {
                    ids.insert(id);
                }
            }
        }
    }
    ids
}

#[tokio::test]
async fn kill9_during_streaming_uploads_loses_no_forwarded_subject() {
    let up = Upstream::http().await;
    let mut gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    let mut next = 1u64;
    for cycle in 0..20u64 {
        let from = next;
        next += 1_000_000;
        let kill_after = Duration::from_millis(100 + (cycle * 37) % 400);
        let upload = stream_users(&gate, from, 200_000, 500, Duration::from_millis(5));
        tokio::select! {
            _ = upload => {}
            _ = tokio::time::sleep(kill_after) => {}
        }
        gate.kill9();
        eventually(
            "the upstream recorded the broken body",
            Duration::from_secs(10),
            || async { (up.in_flight() == 0).then_some(()) },
        )
        .await;
        // Which subjects, not only how many: every one the upstream received is in the
        // ledger the killed gate left behind.
        let received = received_ids(&up);
        let missing = crate::harness::ledger::local_ledger_missing(
            &gate.dir().join("data"),
            &gate.dir().join("secrets/subject-hash.key"),
            received.iter().copied(),
            Regime::Cac2024,
        )
        .await;
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} of the {} subjects the upstream received are not counted after kill -9 (first {:?})",
            missing.len(),
            received.len(),
            missing.first()
        );
        gate.restart().await;
        let (counted, _) = gate.entity_counts().await;
        assert!(
            counted >= received.len() as u64,
            "cycle {cycle}: the upstream received {} subjects but only {counted} are counted after kill -9",
            received.len()
        );
    }
    assert!(
        received_ids(&up).len() > 1000,
        "the uploads forwarded too little to prove anything"
    );
}

#[tokio::test]
async fn a_refused_record_at_the_end_of_a_2_gib_stream_never_reaches_the_upstream() {
    let up = Upstream::builder().sink().start().await;
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .section("[inspection]\nmax_body_bytes = 4294967296")
        .destination(eu(up.addr))
        .start()
        .await;
    // 2 GiB of records without personal information, then one with sensitive data that needs a
    // contract the company does not hold.
    let line = format!("{{\"event\":\"view\",\"pad\":\"{}\"}}\n", "p".repeat(100));
    let chunk = bytes::Bytes::from(line.repeat((1 << 20) / line.len()));
    let chunks = (2u64 << 30) / chunk.len() as u64;
    let tail = bytes::Bytes::from_static(
        b"{\"user_id\":42,\"diagnosis\":\"flu\"}\n{\"event\":\"after\"}\n",
    );
    let body = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    )
    .chain(futures_util::stream::iter([Ok(tail)]));
    let sampler = crate::harness::RssSampler::start(gate.pid());
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gate.proxy_url()).unwrap())
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let r = client
        .post(URL)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let peak = sampler.stop();
    assert_eq!(r.status(), 451);
    let v = json(r).await;
    assert_eq!(v["reason"], "approval_required");
    eventually(
        "the upstream recorded the broken body",
        Duration::from_secs(10),
        || async { (up.in_flight() == 0 && !up.received().is_empty()).then_some(()) },
    )
    .await;
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].complete,
        "the upstream must see a broken body, never a clean end"
    );
    let before_refused = chunks * (1 << 20) / line.len() as u64 * line.len() as u64;
    assert!(
        got[0].body_len <= before_refused,
        "bytes of the refused record reached the upstream"
    );
    assert!(
        got[0].body_len + (4 << 20) >= before_refused,
        "far fewer bytes forwarded than the allowed records"
    );
    eprintln!("gate peak RSS during the 2 GiB upload: {} MiB", peak >> 20);
    assert!(peak < 128 << 20, "gate RSS peaked at {} MiB", peak >> 20);
    assert_eq!(gate.entity_counts().await, (0, 0));
}

#[tokio::test]
async fn no_identifier_leaves_the_request_path() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .destination(eu(up.addr))
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let ids = [
        "zq-unique-778899",
        "13912345678",
        "alice.unique@example.com",
        "11010519491231002X",
        "4111111111111111",
        "hdr-unique-5566",
    ];
    let body = format!(
        r#"[{{"user_id":"{}","phone":"{}","email":"{}"}},{{"note":"id {} card {}"}}]"#,
        ids[0], ids[1], ids[2], ids[3], "4111 1111 1111 1111"
    );
    let allowed = gate
        .client()
        .post(format!("{URL}/{}?user_id={}", ids[1], ids[0]))
        .header("content-type", "application/json")
        .header("x-user-id", ids[5])
        .body(body.clone())
        .send()
        .await
        .unwrap();
    // Sensitive (resident ID, card) without a contract: refused, and the refusal leaks nothing.
    assert_eq!(allowed.status(), 451);
    let refusal = allowed.text().await.unwrap();
    let ok = gate
        .post_json(URL, format!(r#"{{"user_id":"{}"}}"#, ids[0]))
        .await;
    assert_eq!(ok.status(), 200);
    let broken = gate
        .post_json(URL, "{\"user_id\": \"13912345678\", broken")
        .await;
    // An unreadable body with an identifier in it: refused as unreadable, and (below) the
    // refusal leaks nothing either.
    assert_eq!(broken.status(), 451);
    assert_eq!(crate::harness::reason_of(&broken), "unreadable_body");
    let broken_body = broken.text().await.unwrap();
    // The audit writer flushes within a second: wait for the three decisions' lines.
    let audit = gate.dir().join("data/audit.jsonl");
    eventually("three audit lines", Duration::from_secs(10), || async {
        let n = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .count();
        (n >= 3).then_some(())
    })
    .await;
    let mut haystacks = vec![
        ("451 body".to_owned(), refusal.into_bytes()),
        (
            "unreadable body's answer".to_owned(),
            broken_body.into_bytes(),
        ),
        ("metrics".to_owned(), gate.metrics().await.into_bytes()),
    ];
    let decisions = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gate.admin_url("/v1/decisions?limit=50"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    haystacks.push(("/v1/decisions".into(), decisions.to_vec()));
    let status = gate.status().await.to_string();
    haystacks.push(("/v1/status".into(), status.into_bytes()));
    let mut stack = vec![gate.dir().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                haystacks.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    assert!(
        haystacks.iter().any(|(n, _)| n.ends_with("audit.jsonl")),
        "no audit log written"
    );
    for (name, data) in &haystacks {
        for id in ids.iter().chain(["4111 1111 1111 1111"].iter()) {
            assert!(
                !data.windows(id.len()).any(|w| w == id.as_bytes()),
                "identifier {id} found in {name}"
            );
        }
    }
}

//! Which approval a request relies on, through the real binary (SPEC §5 "Approvals", §6 audit):
//! several approvals for one destination (the one with room is used, whatever the file order,
//! on the local and the Redis ledger), observe mode recording volume refusals, a reload that
//! revokes, removes or narrows an approval stopping a streaming upload at its next record,
//! reasons that name the real obstacle, and audit counts that are the ledger's counts.

use crate::harness::approvals::{approval, eu, CATEGORIES};
use crate::harness::redis::RedisServer;
use crate::harness::upstream::Upstream;
use crate::harness::{eventually, poll_until, Dest, GateBuilder, GateProc};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const URL: &str = "http://api.eu.test/v1/ingest";

/// A JSON array of sensitive records (user ids `from..to`, each with a diagnosis).
fn sick(from: u64, to: u64) -> String {
    let recs: Vec<String> = (from..to)
        .map(|i| format!("{{\"user_id\":{i},\"diagnosis\":\"flu\"}}"))
        .collect();
    format!("[{}]", recs.join(","))
}

fn admin() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn reload(gate: &GateProc, approvals: &str) {
    std::fs::write(gate.dir().join("approvals.toml"), approvals).unwrap();
    let r = admin()
        .post(gate.admin_url("/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// `/v1/decisions`, oldest first.
async fn decisions(gate: &GateProc, n: usize) -> Vec<serde_json::Value> {
    let v: serde_json::Value = admin()
        .get(gate.admin_url(&format!("/v1/decisions?limit={n}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut d = v["decisions"].as_array().unwrap().clone();
    d.reverse();
    d
}

/// The audit file's lines once there are `n` (the writer flushes at least every second).
async fn audit_lines(gate: &GateProc, n: usize) -> Vec<serde_json::Value> {
    let path = gate.dir().join("data/audit.jsonl");
    let read = || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text, lines)
    };
    let enough = poll_until(Duration::from_secs(20), || async {
        Some(read().1).filter(|lines| lines.len() >= n)
    })
    .await;
    enough.unwrap_or_else(|| {
        let (text, lines) = read();
        panic!("only {} audit lines: {text}", lines.len())
    })
}

/// The `/v1/status` remaining volume (class `all`) of approval `id`.
async fn remaining(gate: &GateProc, id: &str) -> u64 {
    let s = gate.status().await;
    let a = s["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {s}"))
        .clone();
    a["remaining_subjects"]
        .as_u64()
        .unwrap_or_else(|| panic!("{a}"))
}

/// SMALL (5, expiring first, so tried first) and BIG (100), in the given file order: the 6th
/// subject relies on BIG; BIG's last room is used; then 451 `approval_volume_exceeded`.
async fn small_then_big(gate: &GateProc, up: &Upstream) {
    for i in 1..=6 {
        let r = gate.post_json(URL, sick(i, i + 1)).await;
        assert_eq!(r.status(), 200, "subject {i}: {}", r.text().await.unwrap());
    }
    assert_eq!(
        (remaining(gate, "SMALL").await, remaining(gate, "BIG").await),
        (0, 99)
    );
    let relied: Vec<String> = decisions(gate, 6)
        .await
        .iter()
        .map(|d| d["approval"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(relied, ["SMALL", "SMALL", "SMALL", "SMALL", "SMALL", "BIG"]);
    // A subject already counted under SMALL costs SMALL nothing more.
    assert_eq!(gate.post_json(URL, sick(1, 2)).await.status(), 200);
    // BIG's 99 remaining in one request, then nothing fits.
    assert_eq!(gate.post_json(URL, sick(7, 106)).await.status(), 200);
    assert_eq!(remaining(gate, "BIG").await, 0);
    let r = gate.post_json(URL, sick(106, 107)).await;
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "approval_volume_exceeded");
    assert_eq!(gate.entity_counts().await, (105, 105));
    assert_eq!(
        up.received().len(),
        8,
        "the refused request never reached the upstream"
    );
}

fn small_big(order_small_first: bool) -> String {
    let cats = "\"basic\", \"health\"";
    let small = approval(
        "SMALL",
        "standard_contract",
        cats,
        "2098-12-31",
        "max_subjects = 5",
    );
    let big = approval(
        "BIG",
        "standard_contract",
        cats,
        "2099-12-31",
        "max_subjects = 100",
    );
    if order_small_first {
        small + &big
    } else {
        big + &small
    }
}

#[tokio::test]
async fn the_approval_with_room_is_relied_on_whatever_the_file_order() {
    for small_first in [true, false] {
        let up = Upstream::http().await;
        let gate = GateBuilder::new()
            .section(CATEGORIES)
            .approvals(&small_big(small_first))
            .destination(eu(up.addr))
            .start()
            .await;
        small_then_big(&gate, &up).await;
    }
}

#[tokio::test]
async fn the_approval_with_room_is_relied_on_with_the_redis_ledger() {
    let redis = RedisServer::start();
    for small_first in [true, false] {
        let up = Upstream::http().await;
        let builder = GateBuilder::new().file("subject-hash.key", &[0x5a; 32]);
        let key = builder.dir().join("subject-hash.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ledger = format!(
            "backend = \"redis\"\nredis_url = \"{}{}\"\nhash_key_file = \"subject-hash.key\"",
            redis.url(),
            u8::from(small_first)
        );
        let gate = builder
            .ledger_toml(&ledger)
            .section(CATEGORIES)
            .approvals(&small_big(small_first))
            .destination(eu(up.addr))
            .start()
            .await;
        small_then_big(&gate, &up).await;
    }
}

#[tokio::test]
async fn an_exhausted_assessment_does_not_hide_a_contract_with_room() {
    let up = Upstream::http().await;
    let cats = "\"basic\", \"health\"";
    let sa = approval(
        "SA-FULL",
        "security_assessment",
        cats,
        "2026-12-31",
        "max_sensitive_subjects = 2",
    );
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .approvals(&sa)
        .destination(eu(up.addr))
        .start()
        .await;
    assert_eq!(gate.post_json(URL, sick(1, 3)).await.status(), 200);
    let r = gate.post_json(URL, sick(3, 4)).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "approval_volume_exceeded");
    // The exhausted assessment stays first in the file; a contract with room is added.
    let scc = approval(
        "SCC-ROOM",
        "standard_contract",
        cats,
        "2099-12-31",
        "max_sensitive_subjects = 50",
    );
    reload(&gate, &(sa + &scc)).await;
    assert_eq!(gate.post_json(URL, sick(3, 4)).await.status(), 200);
    let last = decisions(&gate, 1).await;
    assert_eq!(last[0]["approval"], "SCC-ROOM");
    assert_eq!(gate.entity_counts().await, (3, 3));
}

#[tokio::test]
async fn observe_mode_records_what_the_volume_would_refuse() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .gate_key("mode = \"observe\"")
        .section(CATEGORIES)
        .approvals(&approval(
            "SCC-3",
            "standard_contract",
            "\"basic\", \"health\"",
            "2099-12-31",
            "max_subjects = 3",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    for i in 1..=5 {
        assert_eq!(gate.post_json(URL, sick(i, i + 1)).await.status(), 200);
    }
    assert_eq!(up.received().len(), 5, "observe mode forwards everything");
    assert_eq!(
        gate.entity_counts().await,
        (5, 5),
        "what was forwarded is counted"
    );
    let got: Vec<(String, String)> = decisions(&gate, 5)
        .await
        .iter()
        .map(|d| {
            (
                d["decision"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let allow = ("allow".to_owned(), "allowed".to_owned());
    let would = (
        "would_block".to_owned(),
        "approval_volume_exceeded".to_owned(),
    );
    assert_eq!(
        got,
        [allow.clone(), allow.clone(), allow, would.clone(), would]
    );
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"would_block\",destination=\"eu\",reason=\"approval_volume_exceeded\"}")
            .await,
        2.0
    );
    let lines = audit_lines(&gate, 5).await;
    assert_eq!(lines[4]["decision"], "would_block");
    assert_eq!(lines[4]["reason"], "approval_volume_exceeded");
    assert_eq!(remaining(&gate, "SCC-3").await, 0);
}

/// A chunked NDJSON upload of 30 sensitive records, one per chunk, fed by the test. After the
/// 5th record is counted, `change` is applied by a reload; the 6th record must be refused.
async fn stream_across_a_reload(change: &str, reason: &str) {
    let up = Upstream::http().await;
    let scc = approval(
        "SCC-1",
        "standard_contract",
        "\"basic\", \"health\"",
        "2099-12-31",
        "",
    );
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .approvals(&scc)
        .destination(eu(up.addr))
        .start()
        .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let client = gate.client();
    let upload = tokio::spawn(async move {
        client
            .post(URL)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
    });
    let record = |i: u64| {
        Ok(bytes::Bytes::from(format!(
            "{{\"user_id\":{i},\"diagnosis\":\"flu\"}}\n"
        )))
    };
    for i in 1..=5 {
        tx.send(record(i)).await.unwrap();
    }
    eventually(
        "the first 5 records were counted",
        Duration::from_secs(20),
        || async { (gate.entity_counts().await == (5, 5)).then_some(()) },
    )
    .await;
    let changed = match change {
        "revoke" => scc.replace("\"active\"", "\"revoked\""),
        "narrow" => scc.replace("\"basic\", \"health\"", "\"basic\""),
        _ => String::new(),
    };
    reload(&gate, &changed).await;
    for i in 6..=30 {
        if tx.send(record(i)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let r = upload.await.unwrap().expect("the client gets an answer");
    assert_eq!(r.status(), 451, "{change}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], reason, "{change}");
    // The upstream saw a broken body with at most the 5 records counted before the reload.
    eventually(
        "the upstream saw the body",
        Duration::from_secs(20),
        || async { (!up.received().is_empty()).then_some(()) },
    )
    .await;
    let got = &up.received()[0];
    assert!(!got.complete, "{change}: the upstream saw a clean end");
    let text = String::from_utf8_lossy(&got.body);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["user_id"].as_u64())
        .collect();
    assert!(ids.iter().all(|i| *i <= 5), "{change}: forwarded {ids:?}");
    assert_eq!(gate.entity_counts().await, (5, 5), "{change}");
    let lines = audit_lines(&gate, 1).await;
    assert_eq!(lines[0]["decision"], "block", "{change}");
    assert_eq!(lines[0]["reason"], reason, "{change}");
}

/// An mpsc receiver as a stream (reqwest wants a `Stream` for a streaming body).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test]
async fn a_revocation_by_reload_stops_a_streaming_upload_at_its_next_record() {
    stream_across_a_reload("revoke", "approval_revoked").await;
}

#[tokio::test]
async fn a_removal_or_narrowing_by_reload_stops_a_streaming_upload_too() {
    stream_across_a_reload("remove", "approval_required").await;
    stream_across_a_reload("narrow", "category_not_approved").await;
}

#[tokio::test]
async fn reasons_name_the_real_obstacle() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .section(CATEGORIES)
        .destination(eu(up.addr))
        .start()
        .await;
    let cases = [
        // (mechanism, status, valid_from, valid_until, reason)
        (
            "standard_contract",
            "pending",
            "2024-01-01",
            "2099-12-31",
            "approval_required",
        ),
        (
            "standard_contract",
            "revoked",
            "2024-01-01",
            "2099-12-31",
            "approval_required",
        ),
        (
            "standard_contract",
            "active",
            "2024-01-01",
            "2025-01-01",
            "approval_required",
        ),
        (
            "security_assessment",
            "pending",
            "2024-01-01",
            "2099-12-31",
            "approval_pending",
        ),
        (
            "security_assessment",
            "revoked",
            "2024-01-01",
            "2099-12-31",
            "approval_revoked",
        ),
        (
            "security_assessment",
            "active",
            "2024-01-01",
            "2025-01-01",
            "approval_expired",
        ),
        (
            "security_assessment",
            "active",
            "2098-01-01",
            "2099-12-31",
            "approval_required",
        ),
        (
            "security_assessment",
            "rejected",
            "2024-01-01",
            "2099-12-31",
            "approval_required",
        ),
    ];
    for (i, (mech, status, from, until, reason)) in cases.into_iter().enumerate() {
        let a = format!("[[approval]]\nid = \"A\"\nmechanism = \"{mech}\"\nstatus = \"{status}\"\ndestinations = [\"eu\"]\ncategories = [\"basic\"]\nvalid_from = \"{from}\"\nvalid_until = \"{until}\"\n");
        reload(&gate, &a).await;
        let r = gate
            .post_json(URL, format!("{{\"user_id\":{}}}", i + 1))
            .await;
        assert_eq!(r.status(), 451, "{mech} {status} {from}..{until}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (v["reason"].as_str(), v["required_mechanism"].as_str()),
            (Some(reason), Some("security_assessment")),
            "{mech} {status} {from}..{until}"
        );
    }
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn audit_counts_are_the_ledger_counts() {
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
        .destination(
            Dest::new("hr", "hr.example.sg")
                .connect_to(up.addr)
                .set("exemption", "\"hr_management\""),
        )
        .start()
        .await;
    let client = gate.client();
    let post = |url: &'static str, body: String| {
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // 1: five subjects, two sensitive → entity (5, 2).
    let five = r#"[{"user_id":1,"diagnosis":"x"},{"user_id":2,"diagnosis":"x"},{"user_id":3},{"user_id":4},{"user_id":5}]"#;
    assert_eq!(post(URL, five.into()).await, 200);
    // 2: refused (contact is not approved), three new subjects → counts stay (5, 2).
    let refused = r#"[{"user_id":6,"phone":"13800138000"},{"user_id":7},{"user_id":8}]"#;
    assert_eq!(post(URL, refused.into()).await, 451);
    // 3: seven subjects to the exempt destination → counted in its own scope only.
    let exempt: Vec<String> = (20..27).map(|i| format!("{{\"user_id\":{i}}}")).collect();
    assert_eq!(
        post(
            "http://hr.example.sg/staff",
            format!("[{}]", exempt.join(","))
        )
        .await,
        200
    );
    // 4: no personal information; 5: an unknown destination.
    assert_eq!(post(URL, r#"{"event":"ping"}"#.into()).await, 200);
    assert_eq!(
        post("http://unknown.example.org/x", r#"{"user_id":9}"#.into()).await,
        451
    );
    // 6: one more sensitive subject → (6, 3).
    assert_eq!(
        post(URL, r#"{"user_id":10,"diagnosis":"x"}"#.into()).await,
        200
    );
    assert_eq!(gate.entity_counts().await, (6, 3));
    let want = [
        ("allow", "allowed", 5, 2),
        ("block", "category_not_approved", 5, 2),
        ("allow", "exempt", 5, 2),
        ("allow", "no_pi", 5, 2),
        ("block", "unknown_destination", 5, 2),
        ("allow", "allowed", 6, 3),
    ];
    let lines = audit_lines(&gate, 6).await;
    let recent = decisions(&gate, 6).await;
    for (k, (decision, reason, all, sensitive)) in want.into_iter().enumerate() {
        for (what, line) in [("audit", &lines[k]), ("decisions", &recent[k])] {
            assert_eq!(
                (
                    line["decision"].as_str(),
                    line["reason"].as_str(),
                    line["entity_subjects"].as_u64(),
                    line["entity_sensitive_subjects"].as_u64()
                ),
                (Some(decision), Some(reason), Some(all), Some(sensitive)),
                "{what} line {k}: {line}"
            );
        }
    }
    assert_eq!(lines[0]["approval"], "SCC-1");
    assert_eq!(lines[2]["new_subjects"], 7, "the exempt scope counted them");
}

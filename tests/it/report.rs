//! `transfer-gate report` and `assess` against a running gate: the inventory in JSON, Markdown
//! and HTML (rendered by headless Chromium, with the SVG data-flow diagram in the DOM and a
//! screenshot to look at), and `assess`'s text, JSON and exit codes.

use crate::harness::upstream::Upstream;
use crate::harness::{cli_on, poll_until, require_tool, CliOutput, Dest, GateBuilder, GateProc};
use std::path::Path;
use std::process::{Command, Output};

fn cli(gate: &GateProc, args: &[&str]) -> CliOutput {
    cli_on(&gate.config, args)
}

async fn post(gate: &GateProc, url: &str, body: &str) -> u16 {
    gate.post_status(url, body, None).await
}

const CATEGORIES: &str = "[inspection.categories]\nhealth = [\"diagnosis\"]";

fn chromium(args: &[&str], page: &Path) -> Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

#[tokio::test]
async fn report_inventories_flows_and_renders_a_diagram() {
    require_tool("chromium");
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .destination(Dest::new("us", "api.us.test").connect_to(up.addr))
        .section(CATEGORIES)
        // Every request here comes from 127.0.0.1: the internal system `crm-sync`.
        .section(
            "[[client]]\nname = \"crm-sync\"\nowner = \"sales ops\"\ncidrs = [\"127.0.0.1/32\"]",
        )
        .approvals(
            "[[approval]]\nid = \"SC-EU-1\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
             destinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\nmax_subjects = 1000\n\
             valid_from = \"2025-01-01\"\nvalid_until = \"2030-01-01\"\n",
        )
        .start()
        .await;
    let eu = "http://api.eu.test/v1/records";
    assert_eq!(
        post(
            &gate,
            eu,
            r#"[{"user_id":1,"diagnosis":"x"},{"user_id":2}]"#
        )
        .await,
        200
    );
    assert_eq!(post(&gate, eu, r#"{"user_id":2}"#).await, 200);
    // The entity has a sensitive subject: cac-2024 needs a contract for any PI to `us`.
    assert_eq!(
        post(&gate, "http://api.us.test/x", r#"{"user_id":3}"#).await,
        451
    );
    assert_eq!(post(&gate, "http://other.example.org/x", "{}").await, 451);

    // JSON: the numbers.
    let out = cli(&gate, &["report", "--format", "json"]);
    assert!(out.success(), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let month = {
        let d = crate::harness::shanghai_today();
        format!("{:04}-{:02}", d.year(), u8::from(d.month()))
    };
    let dests = doc["destinations"].as_array().unwrap();
    let eu_d = dests.iter().find(|d| d["name"] == "eu").unwrap();
    let m = &eu_d["months"][0];
    assert_eq!(m["month"], month);
    assert_eq!(m["subjects"], 2, "{doc:#}");
    assert_eq!(m["sensitive_subjects"], 1);
    let cats: Vec<&str> = m["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cats.contains(&"health"), "{cats:?}");
    assert_eq!(eu_d["approvals"][0], "SC-EU-1");
    let us_d = dests.iter().find(|d| d["name"] == "us").unwrap();
    assert_eq!(us_d["months"][0]["subjects"], 0);
    assert_eq!(
        us_d["months"][0]["blocked"]["approval_required"], 1,
        "{doc:#}"
    );
    assert_eq!(
        doc["unregistered_blocked"][0]["blocked"]["unknown_destination"],
        1
    );
    assert_eq!(doc["approvals"][0]["state"], "in_force");
    assert_eq!(doc["approvals"][0]["used_subjects"], 2);
    assert_eq!(doc["entity_months"][0]["subjects"], 2);
    // Which internal system sent what where: the two subjects to eu, the refusal at us.
    let crm = &doc["clients"][0];
    assert_eq!(crm["name"], "crm-sync", "{doc:#}");
    assert_eq!(crm["owner"], "sales ops");
    let to = |d: &str| {
        crm["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["destination"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("no {d} for crm-sync: {doc:#}"))
    };
    assert_eq!(to("eu")["allowed"], 2);
    assert_eq!(to("eu")["new_subjects"], 2);
    assert_eq!(to("eu")["new_sensitive_subjects"], 1);
    assert_eq!(to("us")["refused"], 1);
    assert_eq!(to("us")["new_subjects"], 0);

    // The activity history survives a kill -9 (it was written when the report was asked for).
    let mut gate = gate;
    gate.restart().await;
    let out = cli(&gate, &["report", "--format", "json"]);
    let again: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(again["destinations"], doc["destinations"]);
    assert_eq!(again["unregistered_blocked"], doc["unregistered_blocked"]);

    // The admin API checks its parameters too.
    let api = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = api
        .get(gate.admin_url("/v1/report?from=2026-1x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let h: serde_json::Value = api
        .get(gate.admin_url("/v1/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["days"][0]["all"], 2, "{h:#}");
    assert_eq!(h["entity_months"][0]["subjects"], 2);

    // A month range without traffic has no monthly rows; a bad month is an error (exit 2).
    let out = cli(
        &gate,
        &[
            "report", "--format", "json", "--from", "2020-01", "--to", "2020-12",
        ],
    );
    let empty: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(empty["destinations"][0]["months"], serde_json::json!([]));
    assert_eq!(cli(&gate, &["report", "--from", "2020-13"]).code, Some(2));

    // Markdown: tables, and the meaning of the monthly figures.
    let out = cli(&gate, &["report", "--format", "md"]);
    let md = out.stdout;
    assert!(md.contains("newly counted"), "{md}");
    assert!(md.contains(&format!("| {month} | 2 | 1 | ")), "{md}");
    assert!(md.contains("health "), "{md}");
    assert!(md.contains("approval_required 1"), "{md}");
    assert!(
        md.contains("| SC-EU-1 | standard_contract | active | in_force |"),
        "{md}"
    );

    // HTML: one self-contained file; Chromium renders it with the SVG in the DOM.
    let html_path = gate.dir().join("report.html");
    let out = cli(
        &gate,
        &[
            "report",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    assert!(out.success());
    let html = std::fs::read_to_string(&html_path).unwrap();
    for external in ["<script", "<link", "src=\"http", "href=\"http", "url(http"] {
        assert!(!html.contains(external), "external asset {external}");
    }
    let dom = chromium(&["--dump-dom"], &html_path);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg id=\"dataflow\""),
        "no SVG in the DOM:\n{dom}"
    );
    assert_eq!(dom.matches("class=\"flow\"").count(), 2);
    // Internal systems → gate → destinations: the system's box, its owner and its table row.
    assert_eq!(dom.matches("class=\"system\"").count(), 1, "{dom}");
    assert!(dom.contains("data-client=\"crm-sync\""));
    assert!(dom.contains("sales ops"));
    assert!(
        dom.contains("<td>crm-sync</td><td>sales ops</td><td>eu</td>"),
        "{dom}"
    );
    assert!(dom.contains("Test Recipient Ltd"));
    assert!(dom.contains("standard_contract SC-EU-1 (in force until 2030-01-01)"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
        ],
        &html_path,
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[tokio::test]
async fn assess_exit_codes_follow_the_actions_due() {
    let up = Upstream::http().await;
    let today = crate::harness::shanghai_today();
    let soon = today + time::Duration::days(100);
    let mut gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section(CATEGORIES)
        .approvals(&format!(
            "[[approval]]\nid = \"SC-EU-1\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
             destinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\n\
             valid_from = \"2025-01-01\"\nvalid_until = \"{soon}\"\n\n\
             [[approval]]\nid = \"SC-EU-0\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
             destinations = [\"eu\"]\ncategories = [\"basic\"]\n\
             valid_from = \"2025-01-01\"\nvalid_until = \"2030-06-30\"\n"
        ))
        .start()
        .await;
    assert_eq!(
        post(
            &gate,
            "http://api.eu.test/r",
            r#"{"user_id":1,"diagnosis":"x"}"#
        )
        .await,
        200
    );
    // SC-EU-1 ends in 100 days: its renewal window (6 months before) is open → exit 1.
    let out = cli(&gate, &["assess"]);
    let text = out.stdout;
    assert_eq!(out.code, Some(1), "{text}");
    assert!(
        text.contains("mechanism required now: standard_contract_or_certification"),
        "{text}"
    );
    assert!(
        text.contains("SC-EU-1") && text.contains("ACTION: renew now"),
        "{text}"
    );
    assert!(text.contains("any_sensitive"), "{text}");
    let out = cli(&gate, &["assess", "--json"]);
    assert_eq!(out.code, Some(1));
    let a: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a["actions_due"], 1, "{a:#}");
    let r = a["renewals"].as_array().unwrap();
    let sc1 = r.iter().find(|r| r["approval"] == "SC-EU-1").unwrap();
    assert_eq!(sc1["state"], "open");
    assert_eq!(sc1["days_to_expiry"], 100);
    let sc0 = r.iter().find(|r| r["approval"] == "SC-EU-0").unwrap();
    assert_eq!(sc0["state"], "not_yet");
    assert_eq!(sc0["start_from"], "2029-12-30");
    let t = a["thresholds"].as_array().unwrap();
    let any = t.iter().find(|t| t["name"] == "any_sensitive").unwrap();
    assert_eq!(any["crossing"], "crossed");
    assert_eq!(any["application"]["state"], "held");
    assert_eq!(a["rate_30_days"]["all"], 1);

    // Without the expiring approval nothing is due → exit 0.
    std::fs::write(
        gate.dir().join("approvals.toml"),
        "[[approval]]\nid = \"SC-EU-0\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
         destinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\n\
         valid_from = \"2025-01-01\"\nvalid_until = \"2030-06-30\"\n",
    )
    .unwrap();
    gate.signal("HUP");
    let code = poll_until(std::time::Duration::from_secs(10), || async {
        Some(cli(&gate, &["assess"]).code).filter(|c| *c == Some(0))
    })
    .await
    .flatten();
    assert_eq!(code, Some(0));

    // A gate that does not answer → exit 2.
    let cfg = gate.config.clone();
    gate.kill9();
    let out = cli_on(&cfg, &["assess"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot reach"));
}

/// The categories and refusals of a report (what every replica must agree on).
/// The `unidentified` client's counters at `dest` in a report's `clients`.
fn client_at(doc: &serde_json::Value, dest: &str) -> serde_json::Value {
    doc["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == "unidentified")
        .flat_map(|c| c["destinations"].as_array().cloned().unwrap_or_default())
        .find(|d| d["destination"] == dest)
        .unwrap_or_default()
}

fn activity_parts(doc: &serde_json::Value) -> serde_json::Value {
    let dests: Vec<serde_json::Value> = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let months: Vec<serde_json::Value> = d["months"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "month": m["month"], "categories": m["categories"], "records": m["records"],
                        "blocked": m["blocked"], "would_block": m["would_block"],
                    })
                })
                .collect();
            serde_json::json!({"name": d["name"], "months": months})
        })
        .collect();
    serde_json::json!({
        "destinations": dests,
        "unregistered_blocked": doc["unregistered_blocked"],
        "activity_since": doc["report"]["activity_since"],
        "clients": doc["clients"],
    })
}

async fn admin_json(gate: &GateProc, path: &str) -> serde_json::Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gate.admin_url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_redis_report_the_same_categories_and_refusals() {
    use crate::harness::redis::RedisServer;
    use crate::harness::redis::{ledger_toml, shared_key};
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let replica = || {
        GateBuilder::new()
            .regime("cac-2022")
            .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
            .destination(Dest::new("us", "api.us.test").connect_to(up.addr))
            .section(CATEGORIES)
            .approvals(
                "[[approval]]\nid = \"SC-EU-1\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
                 destinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\nmax_subjects = 1000\n\
                 valid_from = \"2025-01-01\"\nvalid_until = \"2099-01-01\"\n",
            )
            .ledger_toml(&ledger_toml(&redis, &key))
            .start()
    };
    let (a, mut b) = (replica().await, replica().await);
    a.wait_ledger_up().await;
    b.wait_ledger_up().await;
    // Allowed traffic with categories through A; refused traffic (and a little allowed) via B.
    let eu = "http://api.eu.test/v1/records";
    let sent = r#"[{"user_id":1,"diagnosis":"x"},{"user_id":2}]"#;
    assert_eq!(post(&a, eu, sent).await, 200);
    assert_eq!(post(&a, eu, r#"{"user_id":3}"#).await, 200);
    assert_eq!(post(&b, eu, r#"{"user_id":4}"#).await, 200);
    // cac-2022: any PI needs a contract, and `us` has none.
    assert_eq!(
        post(&b, "http://api.us.test/x", r#"{"user_id":5}"#).await,
        451
    );
    assert_eq!(
        post(&b, "http://api.us.test/x", r#"{"user_id":6}"#).await,
        451
    );
    assert_eq!(post(&b, "http://other.example.org/x", "{}").await, 451);

    // Each replica flushes within a second: poll until A and B agree and hold both.
    let month = {
        let d = crate::harness::shanghai_today();
        format!("{:04}-{:02}", d.year(), u8::from(d.month()))
    };
    let complete = |p: &serde_json::Value| {
        let dest = |n: &str| {
            p["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == n)
                .map(|d| d["months"][0].clone())
                .unwrap_or_default()
        };
        dest("eu")["records"]["basic"] == 3
            && dest("eu")["records"]["health"] == 1
            && dest("us")["blocked"]["approval_required"] == 2
            && p["unregistered_blocked"][0]["blocked"]["unknown_destination"] == 1
            // Per-client counters are shared the same way: every replica's requests.
            && client_at(p, "eu")["allowed"] == 3
            && client_at(p, "us")["refused"] == 2
    };
    let agreed = poll_until(std::time::Duration::from_secs(10), || async {
        let ra = activity_parts(&admin_json(&a, "/v1/report").await);
        let rb = activity_parts(&admin_json(&b, "/v1/report").await);
        (complete(&ra) && ra == rb).then_some(ra)
    })
    .await;
    let ra = match agreed {
        Some(ra) => ra,
        None => {
            let ra = activity_parts(&admin_json(&a, "/v1/report").await);
            let rb = activity_parts(&admin_json(&b, "/v1/report").await);
            panic!("A and B do not agree on every replica's activity:\nA {ra:#}\nB {rb:#}");
        }
    };
    let eu_m = &ra["destinations"][0]["months"][0];
    assert_eq!(eu_m["month"], month);
    assert_eq!(eu_m["categories"], serde_json::json!(["basic", "health"]));
    assert!(ra["activity_since"].is_string(), "{ra:#}");

    // The CLI report of either replica says the same; `/v1/history` too.
    let from_cli = |g: &GateProc| {
        let out = cli(g, &["report", "--format", "json"]);
        assert!(out.success(), "{}", out.stderr);
        activity_parts(&serde_json::from_str(&out.stdout).unwrap())
    };
    assert_eq!(from_cli(&a), ra);
    assert_eq!(from_cli(&b), ra);
    let (ha, hb) = (
        admin_json(&a, "/v1/history").await,
        admin_json(&b, "/v1/history").await,
    );
    assert_eq!(ha["entity_months"], hb["entity_months"]);
    assert_eq!(ha["entity_months"][0]["subjects"], 4, "{ha:#}");

    // The activity lives in Redis, not in B's process: B killed and restarted reports it.
    b.restart().await;
    b.wait_ledger_up().await;
    assert_eq!(activity_parts(&admin_json(&b, "/v1/report").await), ra);
}

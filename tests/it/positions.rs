//! Where the gate looks and how values count (SPEC §3), through the real binary: PI in every
//! position a client can put it — JSON keys, query and form names, path segments, host labels,
//! any header — and written as people write it, is refused to a destination with no approval and
//! never reaches the upstream; every value of a subject field counts; categories anywhere mark
//! the request's subjects; important-data rules hold however the path or field is spelled; and
//! what carries no PI (timestamps, order numbers, UUIDs, versions) still passes.

use crate::harness::upstream::Upstream;
use crate::harness::{curl, Dest, GateBuilder, GateProc};
use std::net::SocketAddr;

const URL: &str = "http://api.eu.test/v1/ingest";
const CATEGORIES: &str = "[inspection.categories]\nhealth = [\"diagnosis\"]";
const IMPORTANT: &str = "[[important_data]]\nname = \"survey-geodata\"\ndestinations = [\"*\"]\npaths = [\"/v1/geodata/*\"]\nfields = [\"survey_coordinates\"]";

fn eu(addr: SocketAddr) -> Dest {
    Dest {
        name: "eu".into(),
        hosts: vec!["api.eu.test".into(), "*.ingest.eu.test".into()],
        extra: vec![],
    }
    .connect_to(addr)
}

/// `cac-2022` without approvals: any PI to `eu` needs a standard contract, so any PI is 451.
async fn strict_gate(up: &Upstream) -> GateProc {
    GateBuilder::new()
        .regime("cac-2022")
        .section(CATEGORIES)
        .section(IMPORTANT)
        .destination(eu(up.addr))
        .start()
        .await
}

/// `cac-2024` without approvals: non-sensitive PI passes (and is counted), sensitive PI is 451.
async fn counting_gate(up: &Upstream) -> GateProc {
    GateBuilder::new()
        .regime("cac-2024")
        .section(CATEGORIES)
        .destination(eu(up.addr))
        .start()
        .await
}

enum Req<'a> {
    Get(&'a str),
    Json(&'a str, &'a str),
    Form(&'a str, &'a str),
    Header(&'a str, &'a str, &'a str),
}

async fn send(gate: &GateProc, r: &Req<'_>) -> (u16, String) {
    let c = gate.client();
    let resp = match r {
        Req::Get(url) => c.get(*url).send().await,
        Req::Json(url, body) => {
            c.post(*url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
        }
        Req::Form(url, body) => {
            c.post(*url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_string())
                .send()
                .await
        }
        Req::Header(url, name, value) => c.get(*url).header(*name, *value).send().await,
    }
    .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn describe(r: &Req<'_>) -> String {
    match r {
        Req::Get(u) => format!("GET {u}"),
        Req::Json(u, b) => format!("POST {u} json {b}"),
        Req::Form(u, b) => format!("POST {u} form {b}"),
        Req::Header(u, n, v) => format!("GET {u} with {n}: {v}"),
    }
}

#[tokio::test]
async fn pi_in_every_position_is_refused_and_never_forwarded() {
    let up = Upstream::http().await;
    let gate = strict_gate(&up).await;
    let id = "11010519491231002X";
    let cases = [
        // JSON object keys.
        Req::Json(URL, r#"{"11010519491231002X": {"visits": 3}}"#),
        Req::Json(URL, r#"{"data": {"13800138000": true}}"#),
        // Query and form names.
        Req::Get("http://api.eu.test/v1/ingest?13800138000"),
        Req::Get("http://api.eu.test/v1/ingest?a=1&13800138000=1"),
        Req::Form(URL, "13800138000=1"),
        Req::Form(URL, "x=1&11010519491231002X"),
        // Path segments, percent-encoded, segment parameters.
        Req::Get("http://api.eu.test/users/13800138000"),
        Req::Get("http://api.eu.test/users/%31%33%38%30%30%31%33%38%30%30%30/orders"),
        Req::Get("http://api.eu.test/users/138%200013%208000"),
        Req::Get("http://api.eu.test/users;id=13800138000/orders"),
        // A host label of a wildcard destination.
        Req::Get("http://13800138000.ingest.eu.test/v1/ingest"),
        Req::Get("http://u-11010519491231002x.ingest.eu.test/v1/ingest"),
        // Cookie, URL-valued and unlisted headers.
        Req::Header(URL, "cookie", "session=abc; tel=13800138000"),
        Req::Header(
            URL,
            "referer",
            "https://shop.example.cn/users/13800138000/cart",
        ),
        Req::Header(
            URL,
            "referer",
            "https://shop.example.cn/cart?customer=13800138000",
        ),
        Req::Header(URL, "origin", "https://13800138000.example.cn"),
        Req::Header(URL, "x-trace-context", "user 110105 19491231 002X"),
        // A subject field however a program spells it (SPEC §3).
        Req::Json(URL, r#"{"userId": "u-77"}"#),
        Req::Json(URL, r#"{"USER-ID": "u-77"}"#),
        Req::Form(URL, "User.Id=u-77"),
        Req::Get("http://api.eu.test/v1/ingest?UserID=u-77"),
        // Documents inside values: serialized JSON in a JSON string, a form value, a header.
        Req::Json(URL, r#"{"event": "{\"userId\":\"u-77\"}"}"#),
        Req::Json(
            URL,
            r#"{"event": "[{\"payload\":\"{\\\"user_id\\\":7}\"}]"}"#,
        ),
        Req::Form(URL, "payload=%7B%22user_id%22%3A%22u-77%22%7D"),
        Req::Header(URL, "x-event", r#"{"user_id":"u-77"}"#),
        // Digits as people write them.
        Req::Json(URL, r#"{"note": "call 138  0013  8000"}"#),
        Req::Json(URL, r#"{"note": "tel 138.0013.8000"}"#),
        Req::Json(URL, r#"{"note": "(138) 0013 8000"}"#),
        Req::Json(URL, r#"{"note": "１３８００１３８０００"}"#),
        Req::Json(URL, r#"{"note": "１３８　００１３　８０００"}"#),
        Req::Json(URL, r#"{"note": "ID 110105 19491231 002X"}"#),
        Req::Json(URL, r#"{"note": "card 4111.1111.1111.1111"}"#),
        Req::Json(URL, r#"{"note": 13800138000}"#),
    ];
    for r in &cases {
        let (status, body) = send(&gate, r).await;
        assert_eq!(status, 451, "{}: {body}", describe(r));
        assert!(
            !body.contains("unreadable_body"),
            "refused for the PI it carries, not as unreadable: {}: {body}",
            describe(r)
        );
        assert!(
            !body.contains(id) && !body.contains("13800138000"),
            "no PI in the answer"
        );
    }
    assert!(
        up.received().is_empty(),
        "nothing reaches the upstream: {:?}",
        up.received()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        gate.entity_counts().await,
        (0, 0),
        "refused requests count nothing"
    );
}

#[tokio::test]
async fn what_carries_no_pi_still_passes() {
    let up = Upstream::http().await;
    let gate = strict_gate(&up).await;
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.139 Safari/537.36";
    let cases = [
        Req::Json(URL, r#"{"ts": 1732700000000, "at": "1732700000000"}"#),
        Req::Json(
            URL,
            r#"{"ts_us": 1732700000000123, "ts_ns": "1732700000000123456"}"#,
        ),
        Req::Json(
            URL,
            r#"{"order": "12345678901234567890", "n": 12345678901234567890}"#,
        ),
        Req::Json(URL, r#"{"trace": "550e8400-e29b-41d4-a716-446655440000"}"#),
        Req::Json(
            URL,
            r#"{"550e8400-e29b-41d4-a716-446655440000": {"page": 2}}"#,
        ),
        Req::Json(
            URL,
            r#"{"version": "131.0.6778.139", "ip": "192.168.100.200"}"#,
        ),
        Req::Get("http://api.eu.test/v1/ingest?page=2&size=50"),
        Req::Get("http://api.eu.test/v1/orders/12345678901234567890?ts=1732700000000"),
        Req::Get("http://api.eu.test/v1/items/550e8400-e29b-41d4-a716-446655440000"),
        Req::Header(URL, "user-agent", ua),
        Req::Header(URL, "x-request-start", "t=1732700000000"),
        Req::Header(URL, "cookie", "theme=dark; page=2"),
        Req::Form(URL, "page=2&ts=1732700000000"),
        // A document inside a value without PI, and text that only looks like one.
        Req::Json(URL, r#"{"event": "{\"page\":2,\"tags\":[\"a\"]}"}"#),
        Req::Json(URL, r#"{"note": "{draft} [v2]"}"#),
    ];
    for r in &cases {
        let (status, body) = send(&gate, r).await;
        assert_eq!(status, 200, "{}: {body}", describe(r));
    }
    assert_eq!(up.received().len(), cases.len());
    assert_eq!(gate.entity_counts().await, (0, 0));
}

#[tokio::test]
async fn every_value_of_a_subject_field_counts() {
    let up = Upstream::http().await;
    let gate = counting_gate(&up).await;
    let mut total = 0;
    let cases: [(Req<'_>, u64); 11] = [
        (Req::Header(URL, "x-user-id", "a, b, c"), 3),
        (Req::Json(URL, r#"{"user_id": [1, 2, 3]}"#), 3),
        (
            Req::Json(URL, r#"{"user_id": {"primary": "o-1", "legacy": 42}}"#),
            2,
        ),
        (Req::Json(URL, r#"{"user_id": "d-1", "user_id": "d-2"}"#), 2),
        (
            Req::Get(
                "http://api.eu.test/v1/ingest?user_id=q1&user_id=q2&user_id[]=q3&user_id[0]=q4",
            ),
            4,
        ),
        (Req::Form(URL, "user_id[]=f1&user_id[]=f2&USER_ID=f3"), 3),
        (
            Req::Json(URL, r#"{"note": "138 0013 8000 和 139 0013 9000"}"#),
            2,
        ),
        (
            Req::Json(URL, r#"[{"user_id": "r1"}, {"user_id": ["r2", "r3"]}]"#),
            3,
        ),
        (Req::Json(URL, r#"{"user_id": [[{"x": "n1"}], "n2"]}"#), 2),
        // A serialized list as a subject field's value, however the field is spelled.
        (Req::Json(URL, r#"{"userId": "[\"s1\", \"s2\"]"}"#), 2),
        (Req::Form(URL, "user_id=%5B%22s3%22%2C%22s4%22%5D"), 2),
    ];
    for (r, n) in &cases {
        let (status, body) = send(&gate, r).await;
        assert_eq!(status, 200, "{}: {body}", describe(r));
        total += n;
        assert_eq!(gate.entity_counts().await, (total, 0), "{}", describe(r));
    }
}

#[tokio::test]
async fn categories_anywhere_mark_every_subject_of_the_request() {
    let up = Upstream::http().await;
    let gate = counting_gate(&up).await;
    let c = gate.client();
    // The subject in a header, health data in the body.
    let r = c
        .post(URL)
        .header("x-user-id", "h-1")
        .header("content-type", "application/json")
        .body(r#"{"diagnosis": "flu"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    // Health data in the query, the subject in the body.
    let (status, _) = send(
        &gate,
        &Req::Json(
            "http://api.eu.test/v1/ingest?diagnosis=flu",
            r#"{"user_id": "q-1"}"#,
        ),
    )
    .await;
    assert_eq!(status, 451);
    // Health data elsewhere in the body than the subject's record.
    let (status, _) = send(
        &gate,
        &Req::Json(
            URL,
            r#"{"diagnosis": "flu", "items": [{"user_id": "b-1"}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 451);
    let (status, _) = send(
        &gate,
        &Req::Json(
            URL,
            r#"{"items": [{"user_id": "b-2"}], "meta": {"diagnosis": "flu"}}"#,
        ),
    )
    .await;
    assert_eq!(status, 451);
    // A category header with a subject in the query.
    let r = c
        .get("http://api.eu.test/v1/ingest?user_id=c-1")
        .header("x-diagnosis", "flu")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    // A streamed body: the head's category applies to every body record.
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"user_id\": \"s-1\"}\n")),
        Ok(bytes::Bytes::from_static(b"{\"user_id\": \"s-2\"}\n")),
    ]);
    let r = c
        .post("http://api.eu.test/v1/ingest?diagnosis=flu")
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    assert!(
        up.received().iter().all(|r| r.body.is_empty()),
        "no refused record reached the upstream"
    );
    assert_eq!(gate.entity_counts().await, (0, 0));
    // Without the health data, the same subjects pass (non-sensitive, counted).
    let (status, _) = send(&gate, &Req::Json(URL, r#"{"items": [{"user_id": "b-1"}]}"#)).await;
    assert_eq!(status, 200);
    // Health data inside the subject's own record stays with that record only.
    let (status, _) = send(
        &gate,
        &Req::Json(URL, r#"[{"user_id": "p-1", "diagnosis": "flu"}]"#),
    )
    .await;
    assert_eq!(status, 451);
    assert_eq!(gate.entity_counts().await, (1, 0));
}

#[tokio::test]
async fn important_data_rules_hold_however_the_path_or_field_is_spelled() {
    let up = Upstream::http().await;
    let gate = strict_gate(&up).await;
    let proxy = gate.proxy_url();
    let paths = [
        "/v1/geodata/x",
        "/v1/%67eodata/x",
        "/v1//geodata/x",
        "/v1/./geodata/x",
        "/v2/../v1/geodata/x",
        "/v1/geodata;v=2/x",
        "/v1/ingest?survey_coordinates[]=1",
        "/v1/ingest?survey_coordinates%5B0%5D=1",
    ];
    for p in paths {
        let url = format!("http://api.eu.test{p}");
        let proxy = proxy.clone();
        let (code, body) =
            tokio::task::spawn_blocking(move || curl(&["--path-as-is", "-g", "-x", &proxy, &url]))
                .await
                .unwrap();
        assert_eq!(code, 451, "{p}: {body}");
        assert!(body.contains("important_data"), "{p}: {body}");
    }
    // A body field with a bracket suffix.
    let (status, body) = send(&gate, &Req::Form(URL, "survey_coordinates[]=1")).await;
    assert_eq!(status, 451, "{body}");
    let (status, body) = send(
        &gate,
        &Req::Json(URL, r#"{"a": {"survey_coordinates[0]": 1}}"#),
    )
    .await;
    assert_eq!(status, 451, "{body}");
    assert!(up.received().is_empty());
    // The audit names the rule (and the categories of what was refused).
    let d = decisions(&gate).await;
    assert_eq!(
        d["decisions"][0]["important_data_rule"], "survey-geodata",
        "{d}"
    );
    // Paths that only look alike pass.
    let (status, _) = send(&gate, &Req::Get("http://api.eu.test/v1/geodatax/x")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn audit_names_the_categories_seen() {
    let up = Upstream::http().await;
    let gate = counting_gate(&up).await;
    let (status, _) = send(
        &gate,
        &Req::Json(
            URL,
            r#"{"diagnosis": "flu", "items": [{"user_id": "a-1", "note": "138 0013 8000"}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 451);
    let d = decisions(&gate).await;
    let cats: Vec<&str> = d["decisions"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(cats.contains(&"health") && cats.contains(&"contact"), "{d}");
    assert!(d["decisions"][0]["important_data_rule"].is_null(), "{d}");
}

async fn decisions(gate: &GateProc) -> serde_json::Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gate.admin_url("/v1/decisions?limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

//! Documents inside values (SPEC §3): serialized JSON carried as a value — a JSON string, a
//! form or query value, a CSV cell, a multipart text part, a header value — is read as JSON,
//! its records nest where the value sits, to the same depth limit.

use super::*;

fn subjects(f: &Findings) -> Vec<(Namespace, String, bool)> {
    let mut v: Vec<_> = f
        .subjects()
        .iter()
        .map(|s| {
            (
                s.namespace,
                String::from_utf8_lossy(&s.id).into_owned(),
                s.categories.contains(Category::Health),
            )
        })
        .collect();
    v.sort();
    v
}

fn field(id: &str, health: bool) -> (Namespace, String, bool) {
    (Namespace::Field, id.to_owned(), health)
}

#[test]
fn a_json_string_holding_json_is_read_as_json() {
    let cfg = spec_cfg();
    // An event payload: the record is inside the string.
    let f = json(
        &cfg,
        r#"{"type":"signup","data":"{\"user_id\":\"u-1\",\"diagnosis\":\"flu\"}"}"#,
    );
    assert_eq!(subjects(&f), [field("u-1", true)]);
    assert_eq!(f.records.len(), 1);
    // A phone inside a payload belongs to the record where the value sits: one person.
    let f = json(
        &cfg,
        r#"{"user_id":"u-2","payload":"{\"mobile\":\"13800138000\",\"diagnosis\":\"x\"}"}"#,
    );
    assert_eq!(subjects(&f), [field("u-2", true)]);
    // A subject field holding a serialized array counts every element.
    let f = json(&cfg, r#"{"user_id":"[\"a\",\"b\",3]"}"#);
    assert_eq!(
        subjects(&f),
        [field("3", false), field("a", false), field("b", false)]
    );
    // Twice serialized.
    let inner = r#"{"user_id":"u-3"}"#;
    let once = serde_json::to_string(&serde_json::json!({ "event": inner })).unwrap();
    let twice = serde_json::to_string(&serde_json::json!({ "envelope": once })).unwrap();
    assert_eq!(subjects(&json(&cfg, &twice)), [field("u-3", false)]);
    // A category field inside a document outside its records applies to the whole request.
    let f = json(
        &cfg,
        r#"[{"user_id":"u-4"},{"meta":"{\"diagnosis\":\"x\"}"}]"#,
    );
    assert_eq!(subjects(&f), [field("u-4", true)]);
}

#[test]
fn a_value_that_only_looks_like_a_document_is_text() {
    let cfg = spec_cfg();
    let f = json(&cfg, r#"{"note":"{not json} call 13800138000 [soon]"}"#);
    assert_eq!(
        subjects(&f),
        [(Namespace::CnMobile, "13800138000".into(), false)]
    );
    // A subject field whose value merely starts with a bracket is one identifier.
    let f = json(&cfg, r#"{"user_id":"[abc]"}"#);
    assert_eq!(subjects(&f), [field("[abc]", false)]);
}

#[test]
fn depth_counts_from_the_top_of_the_body() {
    let cfg = spec_cfg().with_max_depth(4);
    // Two levels outside, three inside: five.
    let body = r#"{"a":{"b":"[[[1]]]"}}"#;
    let e = inspect_bytes(
        &cfg,
        Some("application/json"),
        None,
        body.as_bytes(),
        DATE,
        false,
    )
    .unwrap_err();
    assert!(matches!(e, Unreadable::TooDeep { .. }), "{e:?}");
    // Four in all is fine.
    let body = r#"{"a":{"b":"[[1]]"}}"#;
    inspect_bytes(
        &cfg,
        Some("application/json"),
        None,
        body.as_bytes(),
        DATE,
        false,
    )
    .unwrap();
    // In a form value and a CSV cell too.
    let form = format!("x={}", "%5B".repeat(5) + &"%5D".repeat(5));
    let e = inspect_bytes(
        &cfg,
        Some("application/x-www-form-urlencoded"),
        None,
        form.as_bytes(),
        DATE,
        false,
    )
    .unwrap_err();
    assert!(matches!(e, Unreadable::TooDeep { .. }), "{e:?}");
    let csv = format!("a,b\n1,{}{}\n", "[".repeat(5), "]".repeat(5));
    let e = inspect_bytes(&cfg, Some("text/csv"), None, csv.as_bytes(), DATE, false).unwrap_err();
    assert!(matches!(e, Unreadable::TooDeep { .. }), "{e:?}");
}

#[test]
fn forms_queries_csv_multipart_and_headers_carry_documents() {
    let cfg = spec_cfg();
    let doc = r#"{"user_id":"u-5","diagnosis":"x"}"#;
    let pct: String = form_urlencoded::byte_serialize(doc.as_bytes()).collect();
    let f = inspect_bytes(
        &cfg,
        Some("application/x-www-form-urlencoded"),
        None,
        format!("event={pct}&x=1").as_bytes(),
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(subjects(&f), [field("u-5", true)]);
    // A subject field of a form holding a serialized list.
    let list: String = form_urlencoded::byte_serialize(br#"["u-6","u-7"]"#).collect();
    let f = inspect_bytes(
        &cfg,
        Some("application/x-www-form-urlencoded"),
        None,
        format!("user_id={list}").as_bytes(),
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(subjects(&f), [field("u-6", false), field("u-7", false)]);
    let f = inspect_query(&cfg, &format!("q={pct}"), DATE, false);
    assert_eq!(subjects(&f), [field("u-5", true)]);
    // A CSV cell: the row's subject column holds a document; another cell holds a phone in
    // a document, which belongs to the row's person.
    let csv = "user_id,extra\n\"[\"\"u-8\"\"]\",\"{\"\"m\"\":\"\"13800138000\"\"}\"\n";
    let f = inspect_bytes(&cfg, Some("text/csv"), None, csv.as_bytes(), DATE, false).unwrap();
    assert_eq!(subjects(&f), [field("u-8", false)]);
    let csv = "a,b\n1,\"{\"\"user_id\"\":\"\"u-9\"\"}\"\n";
    let f = inspect_bytes(&cfg, Some("text/csv"), None, csv.as_bytes(), DATE, false).unwrap();
    assert_eq!(subjects(&f), [field("u-9", false)]);
    // A multipart text field.
    let mp =
        format!("--b\r\nContent-Disposition: form-data; name=\"event\"\r\n\r\n{doc}\r\n--b--\r\n");
    let f = inspect_bytes(
        &cfg,
        Some("multipart/form-data; boundary=b"),
        None,
        mp.as_bytes(),
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(subjects(&f), [field("u-5", true)]);
    // A header value.
    let mut h = http::HeaderMap::new();
    h.insert("x-event", http::HeaderValue::from_str(doc).unwrap());
    let f = inspect_headers(&cfg, &h, DATE, false);
    assert_eq!(subjects(&f), [field("u-5", true)]);
}

#[test]
fn streamed_documents_release_no_byte_of_an_open_record() {
    let cfg = spec_cfg();
    let mut body = String::new();
    for i in 0..40 {
        let payload = format!(r#"{{"user_id":"in-{i}","m":"1380013{i:04}"}}"#);
        let line = serde_json::json!({ "n": i, "payload": payload, "user_id": format!("out-{i}") });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let whole = chunked(
        &cfg,
        "application/x-ndjson",
        None,
        body.as_bytes(),
        &[1 << 20],
    )
    .unwrap();
    // Each line: the document's record, then the line's own.
    assert_eq!(whole.len(), 80);
    for sizes in [&[1usize][..], &[7, 3, 64], &[333]] {
        let r = chunked(&cfg, "application/x-ndjson", None, body.as_bytes(), sizes).unwrap();
        assert_eq!(subjects_of(&r), subjects_of(&whole), "{sizes:?}");
        // The document's record is released no later than its line starts.
        for pair in r.chunks(2) {
            assert!(pair[0].release <= pair[1].decoded_span.start, "{sizes:?}");
        }
    }
}

//! Property tests: chunking invariance, agreement with the reference, arbitrary bytes.

use proptest::prelude::*;

use super::reference::{engine, reference, with_outside};
use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id", "uid"],
        &Detector::ALL,
        &[
            ("diagnosis", Category::Health),
            ("gps", Category::Location),
            ("tel", Category::Contact),
        ],
    )
}

fn leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..50).prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        Just(Value::from(13_800_138_000u64)),
        prop_oneof![
            Just("13800138000".to_owned()),
            Just("+86 139-0013-9000".to_owned()),
            Just("x 4111-1111-1111-1111 y".to_owned()),
            Just("Mail A@B.cn now".to_owned()),
            Just("11010519491231002X".to_owned()),
            Just("11010519491231002Y".to_owned()),
            Just(" 7 ".to_owned()),
            Just("flu\n\"q\"\\ \u{4e2d}\u{1F600}".to_owned()),
            Just(String::new()),
            "[a-z0-9 ]{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("user_id".to_owned()),
        Just("userId".to_owned()),
        Just("UID".to_owned()),
        Just("diagnosis".to_owned()),
        Just("gps".to_owned()),
        Just("tel".to_owned()),
        Just("note".to_owned()),
        Just("data".to_owned()),
        "[a-z]{1,6}",
    ]
}

pub(super) fn doc() -> impl Strategy<Value = serde_json::Value> {
    leaf().prop_recursive(5, 60, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((key(), inner.clone()), 0..6)
                .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            // A document inside a value: a container serialized into a string.
            inner.prop_map(|v| match v {
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    serde_json::Value::String(v.to_string())
                }
                other => other,
            }),
        ]
    })
}

proptest! {
    // 400 cases by default; `PROPTEST_CASES=N` for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: crate::testing::proptest_cases(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn chunking_never_changes_results(v in doc(), sizes in prop::collection::vec(1usize..40, 1..5), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let c = cfg();
        let whole = chunked(&c, "application/json", None, &body, &[body.len()]).unwrap();
        let parts = chunked(&c, "application/json", None, &body, &sizes).unwrap();
        prop_assert_eq!(whole, parts);
    }

    #[test]
    fn agrees_with_the_value_reference(v in doc()) {
        let body = serde_json::to_vec(&v).unwrap();
        let c = cfg();
        let got = chunked(&c, "application/json", None, &body, &[7]).unwrap();
        let outside = inspect_bytes(&c, Some("application/json"), None, &body, DATE, false).unwrap().outside();
        prop_assert_eq!(with_outside(engine(&got), outside), reference(&c, &body));
    }

    #[test]
    fn ndjson_chunking_and_reference(docs in prop::collection::vec(doc(), 1..6), sizes in prop::collection::vec(1usize..30, 1..4)) {
        let c = cfg();
        let mut body = Vec::new();
        let mut want = super::reference::Summary::new();
        for d in &docs {
            let line = serde_json::to_vec(d).unwrap();
            for (k, v) in reference(&c, &line) {
                let e = want.entry(k).or_insert((0, false));
                e.0 |= v.0;
                e.1 |= v.1;
            }
            body.extend_from_slice(&line);
            body.extend_from_slice(b"\r\n");
        }
        let whole = chunked(&c, "application/x-ndjson", None, &body, &[body.len()]).unwrap();
        let parts = chunked(&c, "application/x-ndjson", None, &body, &sizes).unwrap();
        prop_assert_eq!(&whole, &parts);
        // Categories outside every record of any line apply to the whole request.
        let outside = inspect_bytes(&c, Some("application/x-ndjson"), None, &body, DATE, false).unwrap().outside();
        prop_assert_eq!(with_outside(engine(&whole), outside), with_outside(want, outside));
    }

    #[test]
    fn csv_chunking_never_changes_results(
        rows in prop::collection::vec(prop::collection::vec(cell(), 3), 1..8),
        sizes in prop::collection::vec(1usize..20, 1..4),
        crlf in any::<bool>(),
    ) {
        let mut body = b"uid,note,diagnosis".to_vec();
        for r in &rows {
            body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            let cells: Vec<String> = r.iter().map(|c| csv_quote(c)).collect();
            body.extend_from_slice(cells.join(",").as_bytes());
        }
        let c = cfg();
        let whole = chunked(&c, "text/csv", None, &body, &[body.len()]).unwrap();
        let parts = chunked(&c, "text/csv", None, &body, &sizes).unwrap();
        prop_assert_eq!(&whole, &parts);
        // Every row whose uid cell is not blank is a record of that uid.
        let want: Vec<&str> = rows.iter().map(|r| r[0].trim()).filter(|u| !u.is_empty()).collect();
        let got: Vec<String> = whole
            .iter()
            .filter(|r| r.subjects[0].namespace == Namespace::Field)
            .map(|r| String::from_utf8(r.subjects[0].id.clone()).unwrap())
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
        sizes in prop::collection::vec(1usize..64, 1..4),
        kind in 0usize..9,
    ) {
        let (ct, enc) = [
            ("application/json", None),
            ("application/x-ndjson", None),
            ("text/csv", None),
            ("application/x-www-form-urlencoded", None),
            ("multipart/form-data; boundary=b", None),
            ("application/json", Some("gzip")),
            ("application/json", Some("deflate")),
            ("application/json", Some("br")),
            ("application/json", Some("zstd")),
        ][kind];
        let _ = chunked_lenient(&cfg(), ct, enc, &body, &sizes);
    }

    #[test]
    fn mutated_compressed_streams_never_panic(
        v in doc(),
        coding in 0usize..4,
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
        sizes in prop::collection::vec(1usize..64, 1..3),
    ) {
        let plain = serde_json::to_vec(&v).unwrap();
        let name = ["gzip", "deflate", "br", "zstd"][coding];
        let mut enc = super::formats::encode(name, &plain);
        for (at, b) in flips {
            let n = enc.len();
            enc[at % n] = b;
        }
        let keep = cut % (enc.len() + 1);
        let _ = chunked_lenient(&cfg(), "application/json", Some(name), &enc[..keep], &sizes);
        let _ = chunked_lenient(&cfg(), "application/json", Some(name), &enc, &sizes);
    }

    #[test]
    fn mutated_json_never_panics(v in doc(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), sizes in prop::collection::vec(1usize..16, 1..3)) {
        let mut body = serde_json::to_vec(&v).unwrap();
        for (at, b) in flips {
            if !body.is_empty() {
                let n = body.len();
                body[at % n] = b;
            }
        }
        let _ = chunked_lenient(&cfg(), "application/json", None, &body, &sizes);
        let _ = chunked_lenient(&cfg(), "application/x-ndjson", None, &body, &sizes);
    }
}

/// Like `chunked` but tolerating errors (and checking release invariants until one).
fn chunked_lenient(
    cfg: &InspectConfig,
    ctype: &str,
    enc: Option<&str>,
    body: &[u8],
    sizes: &[usize],
) -> Result<(), Unreadable> {
    let mut s = Scanner::new(Arc::new(cfg.clone()), Some(ctype), enc, DATE, false);
    let mut i = 0;
    let mut k = 0;
    while i < body.len() {
        let n = sizes[k % sizes.len()].min(body.len() - i);
        s.feed(&body[i..i + n])?;
        i += n;
        k += 1;
        assert!(s.release_offset() <= i as u64);
        s.clear_records();
    }
    s.finish()
}

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("13800138000".to_owned()),
        Just("a,b".to_owned()),
        Just("say \"hi\"".to_owned()),
        Just("two\r\nlines".to_owned()),
        Just("\u{4e2d}\u{6587}".to_owned()),
        "[a-z0-9 ]{0,8}",
    ]
}

fn csv_quote(c: &str) -> String {
    if c.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

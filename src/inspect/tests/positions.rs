//! Where the engine looks and how values count (SPEC §3): JSON keys, every value of a subject
//! field, categories outside every record, query and form names, the URL and every header; and
//! a property: an identifier, however written, planted at a random position of a random
//! request shape is found.

use proptest::prelude::*;

use super::props::doc;
use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id", "uid"],
        &Detector::ALL,
        &[("diagnosis", Category::Health)],
    )
    .with_headers(&["x-user-id"])
}

fn ids(f: &Findings) -> Vec<(Namespace, String)> {
    f.subjects()
        .iter()
        .map(|s| (s.namespace, String::from_utf8_lossy(&s.id).into_owned()))
        .collect()
}

#[test]
fn json_keys_are_inspected() {
    let f = json(&cfg(), r#"{"11010519491231002X": {"visits": 3}}"#);
    assert_eq!(
        ids(&f),
        [(Namespace::CnResidentId, "11010519491231002X".to_owned())]
    );
    // A key inside a record belongs to the record's subject.
    let f = json(&cfg(), r#"{"user_id": 5, "13800138000": true}"#);
    assert_eq!(ids(&f), [(Namespace::Field, "5".to_owned())]);
    assert!(f.subjects()[0].categories.contains(Category::Contact));
    // Configured names are not identifiers.
    let f = json(&cfg(), r#"{"diagnosis": null}"#);
    assert_eq!(f.subject_count(), 0);
}

#[test]
fn every_value_of_a_subject_field_counts() {
    let c = cfg();
    let n = |body: &str| json(&c, body).subject_count();
    assert_eq!(n(r#"{"user_id": [1, 2, 3]}"#), 3);
    assert_eq!(
        n(r#"{"user_id": {"a": "x", "b": 7, "c": null, "d": true}}"#),
        2
    );
    assert_eq!(n(r#"{"user_id": 1, "user_id": 2}"#), 2);
    assert_eq!(n(r#"{"user_id": 1, "uid": "u-1"}"#), 2);
    assert_eq!(n(r#"{"user_id": [[{"x": "n1"}], "n2"]}"#), 2);
    assert_eq!(n(r#"{"user_id": []}"#), 0);
    assert_eq!(n(r#"{"user_id": [{"user_id": 1}, {"user_id": 2}]}"#), 2);
    // Categories of the record reach every one of its subjects.
    let f = json(&c, r#"{"user_id": [1, 2], "diagnosis": "flu"}"#);
    assert_eq!(f.sensitive_count(), 2);
    // Hits inside a record with an empty subject container stay loose.
    let f = json(&c, r#"{"user_id": [], "note": "13800138000"}"#);
    assert_eq!(ids(&f), [(Namespace::CnMobile, "13800138000".to_owned())]);
    // Streaming gives the same records in any chunking.
    let body = br#"[{"user_id": {"a": [1, {"b": 2}]}, "diagnosis": "x"}, {"user_id": 3}]"#;
    let whole = chunked(&c, "application/json", None, body, &[body.len()]).unwrap();
    let bytes = chunked(&c, "application/json", None, body, &[1]).unwrap();
    assert_eq!(whole, bytes);
    assert_eq!(whole.len(), 2);
    assert_eq!(whole[0].subjects.len(), 2);
    assert!(whole[0].subjects.iter().all(|s| s.sensitive));
    assert!(!whole[1].subjects[0].sensitive);
}

#[test]
fn categories_outside_every_record_apply_to_the_request() {
    let c = cfg();
    let f = json(
        &c,
        r#"{"diagnosis": "flu", "items": [{"user_id": 1}, {"user_id": 2}]}"#,
    );
    assert_eq!(f.outside(), CategorySet::of(Category::Health));
    assert_eq!(f.sensitive_count(), 2);
    let f = json(
        &c,
        r#"[{"user_id": 1, "diagnosis": "flu"}, {"user_id": 2}]"#,
    );
    assert!(f.outside().is_empty());
    assert_eq!(f.sensitive_count(), 1);
    // The query's category with the headers' subject: one request.
    let mut h = http::HeaderMap::new();
    h.insert("x-user-id", http::HeaderValue::from_static("7"));
    let mut all = inspect_headers(&c, &h, DATE, false);
    assert_eq!(all.sensitive_count(), 0);
    all.extend(inspect_query(&c, "diagnosis=flu", DATE, false));
    assert_eq!(all.sensitive_count(), 1);
    // A category header.
    let mut h = http::HeaderMap::new();
    h.insert("x-user-id", http::HeaderValue::from_static("7"));
    h.insert("x-diagnosis", http::HeaderValue::from_static("flu"));
    assert_eq!(inspect_headers(&c, &h, DATE, false).sensitive_count(), 1);
}

#[test]
fn query_and_form_names_and_repeats() {
    let c = cfg();
    let f = inspect_query(&c, "13800138000", DATE, false);
    assert_eq!(ids(&f), [(Namespace::CnMobile, "13800138000".to_owned())]);
    let f = inspect_query(&c, "a=1&110105%2019491231%20002X=1", DATE, false);
    assert_eq!(
        ids(&f),
        [(Namespace::CnResidentId, "11010519491231002X".to_owned())]
    );
    let f = inspect_query(
        &c,
        "user_id=1&user_id=2&user_id[]=3&user_id%5B0%5D=4&data[uid]=5",
        DATE,
        false,
    );
    assert_eq!(f.subject_count(), 5);
    let f = inspect_bytes(
        &c,
        Some("application/x-www-form-urlencoded"),
        None,
        b"13800138000=1&USER_ID[]=a&user_id[]=b",
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(
        f.subject_count(),
        2,
        "the phone belongs to the form's subjects"
    );
    let f = inspect_query(&c, "page=2&ts=1732700000000", DATE, false);
    assert_eq!(f.subject_count(), 0);
}

#[test]
fn url_and_headers() {
    let c = cfg();
    let url = |host: &str, path: &str| ids(&inspect_url(&c, host, path, DATE, false));
    let phone = vec![(Namespace::CnMobile, "13800138000".to_owned())];
    assert_eq!(url("13800138000.ingest.example.eu", "/"), phone);
    assert_eq!(url("api.example.eu", "/users/13800138000"), phone);
    assert_eq!(
        url("api.example.eu", "/users/%31%33%38%30%30%31%33%38%30%30%30"),
        phone
    );
    assert_eq!(url("api.example.eu", "/users;id=13800138000/x"), phone);
    assert_eq!(url("api.example.eu", "/138/0013/8000"), phone);
    assert!(url(
        "api.example.eu",
        "/v1/items/550e8400-e29b-41d4-a716-446655440000"
    )
    .is_empty());
    let mut h = http::HeaderMap::new();
    h.append("x-user-id", http::HeaderValue::from_static("a, b, c"));
    h.append("x-user-id", http::HeaderValue::from_static("d"));
    assert_eq!(inspect_headers(&c, &h, DATE, false).subject_count(), 4);
    for (name, value) in [
        ("cookie", "session=abc; tel=13800138000"),
        ("cookie", "uid=42"),
        ("referer", "https://shop.example.cn/u/13800138000"),
        (
            "referer",
            "https://shop.example.cn/cart?c=138%200013%208000",
        ),
        ("origin", "https://13800138000.example.cn"),
        ("x-anything", "13800138000"),
        ("authorization", "Bearer 13800138000"),
    ] {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
        assert_eq!(
            inspect_headers(&c, &h, DATE, false).subject_count(),
            1,
            "{name}: {value}"
        );
    }
    let mut h = http::HeaderMap::new();
    h.insert(
        "content-length",
        http::HeaderValue::from_static("13800138000"),
    );
    h.insert(
        "user-agent",
        http::HeaderValue::from_static("Mozilla/5.0 Chrome/131.0.6778.139 Safari/537.36"),
    );
    h.insert("x-ts", http::HeaderValue::from_static("1732700000000"));
    assert_eq!(inspect_headers(&c, &h, DATE, false).subject_count(), 0);
}

/// An identifier as people write it, and what it normalises to.
fn ident() -> impl Strategy<Value = (String, Namespace, &'static str)> {
    let phone = prop_oneof![
        Just("13800138000"),
        Just("138 0013 8000"),
        Just("138-0013-8000"),
        Just("138.0013.8000"),
        Just("138/0013/8000"),
        Just("138  0013  8000"),
        Just("(138) 0013 8000"),
        Just("+86 138 0013 8000"),
        Just("0086-138-0013-8000"),
        Just("138-00138000"),
        Just("１３８００１３８０００"),
        Just("１３８\u{3000}００１３\u{3000}８０００"),
    ]
    .prop_map(|s| (s.to_owned(), Namespace::CnMobile, "13800138000"));
    let id = prop_oneof![
        Just("11010519491231002X"),
        Just("11010519491231002x"),
        Just("110105 19491231 002X"),
        Just("110105-1949-1231-002X"),
    ]
    .prop_map(|s| (s.to_owned(), Namespace::CnResidentId, "11010519491231002X"));
    let card = prop_oneof![
        Just("4111111111111111"),
        Just("4111 1111 1111 1111"),
        Just("4111.1111.1111.1111"),
    ]
    .prop_map(|s| (s.to_owned(), Namespace::BankCard, "4111111111111111"));
    let email = Just((
        "Zhang.San@Example.CN".to_owned(),
        Namespace::Email,
        "zhang.san@example.cn",
    ));
    prop_oneof![phone, id, card, email]
}

/// Where to put it.
#[derive(Debug, Clone, Copy)]
enum Place {
    JsonKey,
    JsonValue,
    QueryName,
    QueryValue,
    FormName,
    FormValue,
    PathSegment,
    Header,
    Cookie,
    Referer,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::JsonKey),
        Just(Place::JsonValue),
        Just(Place::QueryName),
        Just(Place::QueryValue),
        Just(Place::FormName),
        Just(Place::FormValue),
        Just(Place::PathSegment),
        Just(Place::Header),
        Just(Place::Cookie),
        Just(Place::Referer),
    ]
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Inserts `(key, value)` into the `at`-th object of `v` (pre-order), or wraps `v`.
fn plant(v: &mut serde_json::Value, at: usize, key: String, value: serde_json::Value) {
    fn count(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(m) => 1 + m.values().map(count).sum::<usize>(),
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    fn insert(
        v: &mut serde_json::Value,
        k: &mut usize,
        key: &str,
        value: &serde_json::Value,
    ) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                if *k == 0 {
                    m.insert(key.to_owned(), value.clone());
                    return true;
                }
                *k -= 1;
                m.values_mut().any(|x| insert(x, k, key, value))
            }
            serde_json::Value::Array(a) => a.iter_mut().any(|x| insert(x, k, key, value)),
            _ => false,
        }
    }
    let n = count(v);
    if n == 0 {
        let inner = v.take();
        let mut m = serde_json::Map::new();
        m.insert("doc".to_owned(), inner);
        m.insert(key, value);
        *v = serde_json::Value::Object(m);
        return;
    }
    let mut k = at % n;
    insert(v, &mut k, &key, &value);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crate::testing::proptest_cases(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_identifier_anywhere_is_found(
        (text, ns, want) in ident(),
        place in place(),
        shape in doc(),
        at in any::<usize>(),
        pre in "([a-z]{0,5} )?",
        post in "( [a-z]{0,5})?",
        noise in prop::collection::vec(("[a-z]{1,6}", "[a-z0-9]{0,6}"), 0..4),
    ) {
        // No subject fields: every hit is a subject of its own, so "found" is exact.
        let c = InspectConfig::for_tests(&[], &Detector::ALL, &[]);
        let s = format!("{pre}{text}{post}");
        let mut pairs: Vec<String> = noise.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let slot = at % (pairs.len() + 1);
        let f = match place {
            Place::JsonKey | Place::JsonValue => {
                let mut v = shape;
                let (k, x) = match place {
                    Place::JsonKey => (s.clone(), serde_json::Value::from(1)),
                    _ => ("note".to_owned(), serde_json::Value::from(s.clone())),
                };
                plant(&mut v, at, k, x);
                let body = serde_json::to_vec(&v).unwrap();
                inspect_bytes(&c, Some("application/json"), None, &body, DATE, false).unwrap()
            }
            Place::QueryName | Place::QueryValue | Place::FormName | Place::FormValue => {
                let pair = match place {
                    Place::QueryName | Place::FormName => pct(&s),
                    _ => format!("v={}", pct(&s)),
                };
                pairs.insert(slot, pair);
                let q = pairs.join("&");
                if matches!(place, Place::QueryName | Place::QueryValue) {
                    inspect_query(&c, &q, DATE, false)
                } else {
                    let ct = Some("application/x-www-form-urlencoded");
                    inspect_bytes(&c, ct, None, q.as_bytes(), DATE, false).unwrap()
                }
            }
            Place::PathSegment => {
                let mut segs: Vec<String> = noise.iter().map(|(k, _)| k.clone()).collect();
                segs.insert(slot, pct(&s));
                inspect_url(&c, "api.example.eu", &format!("/{}", segs.join("/")), DATE, false)
            }
            Place::Header | Place::Cookie | Place::Referer => {
                let mut h = http::HeaderMap::new();
                for (k, v) in &noise {
                    h.append(
                        http::HeaderName::from_bytes(format!("x-{k}").as_bytes()).unwrap(),
                        http::HeaderValue::from_str(v).unwrap(),
                    );
                }
                let (name, value) = match place {
                    Place::Header => ("x-data", s.clone()),
                    Place::Cookie => ("cookie", format!("a=b; c={}; d=e", pct(&s))),
                    _ => ("referer", format!("https://e.example.cn/x/{}?y=1", pct(&s))),
                };
                h.append(name, http::HeaderValue::from_bytes(value.as_bytes()).unwrap());
                inspect_headers(&c, &h, DATE, false)
            }
        };
        let found = f.subjects().iter().any(|x| x.namespace == ns && x.id == want.as_bytes());
        prop_assert!(found, "{:?} {:?} not found", place, s);
    }
}

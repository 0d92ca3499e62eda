//! Differential tests: for generated bodies of every supported type, every string a well-kept
//! parser extracts (`serde_json`, the `csv` crate, `form_urlencoded`, `multer`) must be among
//! the texts the gate runs its detectors on. What the gate inspects is recorded by the
//! detectors' test trace ([`super::super::detect::trace`]), so the test sees exactly what
//! reached the detectors, not a re-derivation of it.

use proptest::prelude::*;

use super::super::detect::trace;
use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id"],
        &Detector::ALL,
        &[("diagnosis", Category::Health)],
    )
}

/// Runs the gate over `body` and returns every text it handed to the detectors.
fn inspected(ctype: &str, body: &[u8]) -> Vec<Vec<u8>> {
    trace::start();
    let r = inspect_bytes(&cfg(), Some(ctype), None, body, DATE, false);
    let seen = trace::take();
    if let Err(e) = r {
        panic!("{ctype}: the gate could not read a body a reference parser reads: {e:?}");
    }
    seen
}

/// Every `want` string is inside some inspected text.
fn assert_subset(what: &str, want: &[String], seen: &[Vec<u8>]) {
    for w in want.iter().filter(|w| !w.is_empty()) {
        assert!(
            seen.iter()
                .any(|s| s.windows(w.len()).any(|x| x == w.as_bytes())),
            "{what}: the reference parser extracts {w:?}, the gate never inspected it"
        );
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("13800138000".to_owned()),
        Just("a,b;c=d&e".to_owned()),
        Just("\"quoted\"\r\nline".to_owned()),
        Just("名字 张三".to_owned()),
        Just("--BB".to_owned()),
        Just("%41+x".to_owned()),
        "[a-zA-Z0-9 ,\"=&%+.\n]{0,16}",
        "\\PC{0,8}",
    ]
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        // A document inside a value is inspected as JSON (SPEC §3): its strings, not the
        // serialized text as one.
        serde_json::Value::String(s) => match serde_json::from_str(s) {
            Ok(doc @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                json_strings(&doc, out)
            }
            _ => out.push(s.clone()),
        },
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn json_strings_are_all_inspected(doc in super::props::doc()) {
        let body = serde_json::to_vec(&doc).unwrap();
        let seen = inspected("application/json", &body);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut want = Vec::new();
        json_strings(&parsed, &mut want);
        assert_subset("json", &want, &seen);
        // The same document labelled as a form is read as JSON too.
        let seen = inspected("application/x-www-form-urlencoded", &body);
        if body.first().is_some_and(|c| *c == b'{' || *c == b'[') {
            assert_subset("json as form", &want, &seen);
        }
    }

    #[test]
    fn form_values_are_all_inspected(pairs in prop::collection::vec((text(), text()), 0..8)) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter())
            .finish();
        let seen = inspected("application/x-www-form-urlencoded", body.as_bytes());
        let want: Vec<String> = form_urlencoded::parse(body.as_bytes())
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_subset("form", &want, &seen);
    }

    #[test]
    fn csv_cells_are_all_inspected(
        rows in prop::collection::vec(prop::collection::vec(text(), 1..5), 1..6),
        absent in any::<bool>(),
        charset in prop_oneof![Just("utf-8"), Just("utf-16le"), Just("gb18030")],
    ) {
        let mut w = ::csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        for r in &rows {
            w.write_record(r).unwrap();
        }
        let utf8 = w.into_inner().unwrap();
        let text = String::from_utf8(utf8.clone()).unwrap();
        let body = match charset {
            "utf-16le" => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            "gb18030" => encoding_rs::GB18030.encode(&text).0.into_owned(),
            _ => utf8.clone(),
        };
        let header = if absent { "; header=absent" } else { "" };
        let seen = inspected(&format!("text/csv; charset={charset}{header}"), &body);
        let mut want = Vec::new();
        let mut rd = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(utf8.as_slice());
        for rec in rd.records() {
            want.extend(rec.unwrap().iter().map(str::to_owned));
        }
        assert_subset("csv", &want, &seen);
    }

    #[test]
    fn multipart_fields_are_all_inspected(
        fields in prop::collection::vec(
            ("[a-z_0-9]{1,8}|13800138000", prop::option::of("[a-zA-Z0-9 ._-]{1,12}"), text()),
            1..5,
        ),
        preamble in prop::option::of("[a-z0-9 ]{0,16}"),
    ) {
        let mut body = Vec::new();
        if let Some(p) = &preamble {
            body.extend_from_slice(p.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        for (name, file, value) in &fields {
            body.extend_from_slice(b"--BB\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
            if let Some(f) = file {
                body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(value.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--BB--\r\n");
        // A value holding the delimiter is not a body a client would send (RFC 2046).
        prop_assume!(!fields.iter().any(|(_, _, v)| v.contains("--BB")));
        let seen = inspected("multipart/form-data; boundary=BB", &body);
        let want = multer_fields(body.clone());
        assert_subset("multipart", &want, &seen);
    }
}

/// Every name, file name and value `multer` extracts.
fn multer_fields(body: Vec<u8>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = futures_util::stream::once(async move {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
        });
        let mut mp = multer::Multipart::new(stream, "BB");
        let mut out = Vec::new();
        while let Some(field) = mp.next_field().await.unwrap() {
            out.extend(field.name().map(str::to_owned));
            out.extend(field.file_name().map(str::to_owned));
            out.push(field.text().await.unwrap());
        }
        out
    })
}

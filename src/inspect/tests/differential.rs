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

/// A generated XML element: name, attributes and children.
#[derive(Debug, Clone)]
struct El {
    name: (usize, usize),
    attrs: Vec<((usize, usize), String)>,
    kids: Vec<Kid>,
}

#[derive(Debug, Clone)]
enum Kid {
    Text(String, bool),
    CData(String),
    Comment(String),
    El(El),
}

const XML_NAMES: [&str; 9] = [
    "user_id",
    "customer_id",
    "diagnosis",
    "phone",
    "Row",
    "note",
    "a-b",
    "名前",
    "x13800138000",
];
const XML_PREFIXES: [&str; 3] = ["", "ns1:", "soap:"];

fn xml_name() -> impl Strategy<Value = (usize, usize)> {
    (0..XML_PREFIXES.len(), 0..XML_NAMES.len())
}

fn xml_el() -> impl Strategy<Value = El> {
    let leaf = (
        xml_name(),
        prop::collection::vec((xml_name(), text()), 0..3),
        prop::collection::vec(
            prop_oneof![
                (text(), any::<bool>()).prop_map(|(t, r)| Kid::Text(t, r)),
                text().prop_map(Kid::CData),
                "[a-z0-9 ]{0,12}".prop_map(Kid::Comment),
            ],
            0..3,
        ),
    )
        .prop_map(|(name, attrs, kids)| El { name, attrs, kids });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            xml_name(),
            prop::collection::vec((xml_name(), text()), 0..3),
            prop::collection::vec(
                prop_oneof![
                    inner.prop_map(Kid::El),
                    (text(), any::<bool>()).prop_map(|(t, r)| Kid::Text(t, r)),
                    text().prop_map(Kid::CData),
                ],
                0..5,
            ),
        )
            .prop_map(|(name, attrs, kids)| El { name, attrs, kids })
    })
}

/// Escapes text for XML; with `refs`, digits become character references.
fn xml_escape(s: &str, refs: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            d if refs && d.is_ascii_digit() => out.push_str(&format!("&#{};", d as u32)),
            c => out.push(c),
        }
    }
}

fn xml_write(e: &El, root: bool, out: &mut String) {
    let name = format!("{}{}", XML_PREFIXES[e.name.0], XML_NAMES[e.name.1]);
    out.push('<');
    out.push_str(&name);
    if root {
        out.push_str(" xmlns=\"urn:d\" xmlns:ns1=\"urn:13900139000\" xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"");
    }
    let mut seen = Vec::new();
    for (a, v) in &e.attrs {
        // Unique by local name (a namespaced duplicate would be legal but clutters names).
        if seen.contains(&a.1) {
            continue;
        }
        seen.push(a.1);
        out.push_str(&format!(" {}{}=\"", XML_PREFIXES[a.0], XML_NAMES[a.1]));
        xml_escape(v, false, out);
        out.push('"');
    }
    out.push('>');
    for k in &e.kids {
        match k {
            Kid::Text(t, refs) => xml_escape(t, *refs, out),
            Kid::CData(t) => {
                out.push_str("<![CDATA[");
                out.push_str(&t.replace("]]>", "]]]]><![CDATA[>"));
                out.push_str("]]>");
            }
            Kid::Comment(t) => out.push_str(&format!("<!--{t}-->")),
            Kid::El(k) => xml_write(k, false, out),
        }
    }
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
}

/// Every name (but configured field names, which are looked up, not scanned) and value
/// `roxmltree` finds in a document.
fn roxmltree_strings(doc: &roxmltree::Document<'_>, c: &InspectConfig) -> Vec<String> {
    let mut out = Vec::new();
    let name = |n: &str, out: &mut Vec<String>| {
        if c.lookup(n.as_bytes()).is_none() {
            out.push(n.to_owned());
        }
    };
    for n in doc.descendants() {
        match n.node_type() {
            roxmltree::NodeType::Element => {
                name(n.tag_name().name(), &mut out);
                for a in n.attributes() {
                    name(a.name(), &mut out);
                    out.push(a.value().to_owned());
                }
                out.extend(n.namespaces().map(|ns| ns.uri().to_owned()));
            }
            roxmltree::NodeType::Text | roxmltree::NodeType::Comment => {
                out.extend(n.text().map(str::to_owned));
            }
            roxmltree::NodeType::PI => {
                out.extend(n.pi().and_then(|p| p.value).map(str::to_owned));
            }
            roxmltree::NodeType::Root => {}
        }
    }
    out
}

/// White space as a tree parser normalises it (line ends, attribute values): every run of
/// it is one space, on both sides of the comparison.
fn squash(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        let b = if b.is_ascii_whitespace() { b' ' } else { b };
        if !(b == b' ' && out.last() == Some(&b' ')) {
            out.push(b);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(96)))]

    /// For generated XML (SOAP-like namespaces, subject fields as elements and attributes,
    /// text with character references, CDATA, comments), everything `roxmltree` extracts as
    /// names and values is among the texts the gate inspected, and the records do not depend
    /// on how the body is cut.
    #[test]
    fn xml_names_and_values_are_all_inspected(
        root in xml_el(),
        sizes in prop::collection::vec(1usize..64, 1..4),
    ) {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml_write(&root, true, &mut body);
        let doc = roxmltree::Document::parse(&body).unwrap();
        let want: Vec<String> = roxmltree_strings(&doc, &cfg())
            .iter()
            .map(|w| String::from_utf8_lossy(&squash(w.trim().as_bytes())).into_owned())
            .collect();
        let seen: Vec<Vec<u8>> = inspected("application/soap+xml", body.as_bytes())
            .iter()
            .map(|s| squash(s))
            .collect();
        assert_subset("xml", &want, &seen);
        let whole = chunked(&cfg(), "text/xml", None, body.as_bytes(), &[body.len()]).unwrap();
        let cut = chunked(&cfg(), "text/xml", None, body.as_bytes(), &sizes).unwrap();
        prop_assert_eq!(whole, cut);
    }
}

//! XML and SOAP bodies (SPEC §3): names and values read, records as JSON makes them, charsets
//! from the declaration, DTDs refused, streaming record by record.

use proptest::prelude::*;

use super::formats::encode;
use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id", "customer_id"],
        &Detector::ALL,
        &[
            ("diagnosis", Category::Health),
            ("phone", Category::Contact),
        ],
    )
}

fn xml(ct: &str, body: &[u8]) -> Result<Findings, Unreadable> {
    inspect_bytes(&cfg(), Some(ct), None, body, DATE, false)
}

fn ok(body: &str) -> Findings {
    match xml("application/xml", body.as_bytes()) {
        Ok(f) => f,
        Err(e) => panic!("unreadable ({e}): {body}"),
    }
}

/// (namespace, id, sensitive) of every subject.
fn subs(f: &Findings) -> Vec<(Namespace, String, bool)> {
    f.subjects()
        .into_iter()
        .map(|s| {
            (
                s.namespace,
                String::from_utf8_lossy(&s.id).into_owned(),
                s.sensitive,
            )
        })
        .collect()
}

fn field(id: &str, sensitive: bool) -> (Namespace, String, bool) {
    (Namespace::Field, id.to_owned(), sensitive)
}

const SOAP11: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:hr="urn:example:hr" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <soap:Header><hr:Auth>token-abc</hr:Auth></soap:Header>
  <soap:Body>
    <hr:SyncEmployees>
      <hr:Employee>
        <hr:user_id xsi:type="xsd:string">E1001</hr:user_id>
        <hr:Name>Wang Wei</hr:Name>
        <hr:Mobile>138 0013 8000</hr:Mobile>
        <hr:diagnosis>flu</hr:diagnosis>
      </hr:Employee>
      <hr:Employee>
        <hr:user_id>E1002</hr:user_id>
        <hr:Email>li.na@example.cn</hr:Email>
      </hr:Employee>
    </hr:SyncEmployees>
  </soap:Body>
</soap:Envelope>"#;

#[test]
fn soap_1_1_envelope_with_prefixes_counts_like_json() {
    let f = ok(SOAP11);
    assert_eq!(f.records.len(), 2);
    assert_eq!(subs(&f), [field("E1001", true), field("E1002", false)]);
    let s = f.subjects();
    assert!(s[0].categories.contains(Category::Health));
    assert!(
        s[0].categories.contains(Category::Contact),
        "the mobile hit"
    );
    assert!(
        s[1].categories.contains(Category::Contact),
        "the e-mail hit"
    );
    // The same people in JSON.
    let j = json(
        &cfg(),
        r#"{"auth":"token-abc","employees":[
            {"user_id":"E1001","name":"Wang Wei","mobile":"138 0013 8000","diagnosis":"flu"},
            {"user_id":"E1002","email":"li.na@example.cn"}]}"#,
    );
    assert_eq!(subs(&j), subs(&f));
    assert_eq!(j.categories(), f.categories());
    // As text/xml and as SOAP 1.2's type, with parameters.
    for ct in [
        "text/xml; charset=utf-8",
        "application/soap+xml; charset=UTF-8; action=\"urn:sync\"",
    ] {
        assert_eq!(subs(&xml(ct, SOAP11.as_bytes()).unwrap()), subs(&f), "{ct}");
    }
}

#[test]
fn soap_1_2_default_namespace_and_subject_attributes() {
    let body = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">
 <env:Body>
  <Customers xmlns="urn:example:crm" xmlns:c="urn:example:crm">
   <Customer c:customer_id="C-7" tier="gold"><phone>13900139000</phone></Customer>
   <Customer customer_id="C-8"/>
   <Customer customer_id="   "/>
  </Customers>
 </env:Body>
</env:Envelope>"#;
    let f = ok(body);
    assert_eq!(f.records.len(), 2);
    assert_eq!(subs(&f), [field("C-7", false), field("C-8", false)]);
    assert!(f.subjects()[0].categories.contains(Category::Contact));
    // `xmlns:*` bindings are not fields, even when the prefix is a subject field's name.
    let f = ok(r#"<a xmlns:user_id="urn:x"><user_id:b>1</user_id:b></a>"#);
    assert_eq!(subs(&f), []);
}

#[test]
fn cdata_comments_instructions_and_references() {
    let f = ok(
        "<row><user_id><![CDATA[U-1]]></user_id><note><![CDATA[call 138 0013 8000 <now>]]></note></row>",
    );
    assert_eq!(subs(&f), [field("U-1", false)]);
    assert!(f.subjects()[0].categories.contains(Category::Contact));
    // Comments and processing instructions are read by the detectors; outside every record
    // each hit is a subject of its own.
    let f = ok("<a><!-- call 13800138000 --><?note 13900139000?></a>");
    let ids: Vec<_> = subs(&f).into_iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        ids,
        [
            (Namespace::CnMobile, "13800138000".to_owned()),
            (Namespace::CnMobile, "13900139000".to_owned())
        ]
    );
    // A phone spelled with character references, decimal and hex, and text, references and
    // CDATA joined into one value.
    for body in [
        "<a><tel>&#49;&#51;&#56;&#48;&#48;&#49;&#51;&#56;&#48;&#48;&#48;</tel></a>",
        "<a><tel>&#x31;&#x33;&#x38;0013&#56;000</tel></a>",
        "<a><tel>138<![CDATA[0013]]>8000</tel></a>",
        "<a tel=\"&#49;38&#x30;0138000\"/>",
        "<a><tel>&lt;13800138000&gt; &amp; &quot;&apos;</tel></a>",
    ] {
        let f = ok(body);
        assert_eq!(
            subs(&f),
            [(Namespace::CnMobile, "13800138000".to_owned(), false)],
            "{body}"
        );
    }
    // An entity the gate does not define is unreadable (no DTD defines one either).
    for body in [
        "<a>&nbsp;</a>",
        "<a b=\"&x;\"/>",
        "<a>&#0;</a>",
        "<a>&#xD800;</a>",
        "<a>& b</a>",
    ] {
        assert!(
            matches!(
                xml("text/xml", body.as_bytes()),
                Err(Unreadable::Malformed { .. })
            ),
            "{body}"
        );
    }
}

#[test]
fn nested_records_and_categories() {
    let f = ok("<orders><order><customer_id>C1</customer_id><items>\
        <item><user_id>U9</user_id><diagnosis>x</diagnosis></item></items></order></orders>");
    assert_eq!(f.records.len(), 2);
    assert_eq!(subs(&f), [field("C1", false), field("U9", true)]);
    // Every value counts: repeated subject elements, and the text inside a subject element
    // at any depth.
    let f = ok("<r><user_id>1</user_id><user_id>2</user_id><user_id><v>3</v></user_id></r>");
    assert_eq!(f.records.len(), 1);
    assert_eq!(
        subs(&f),
        [field("1", false), field("2", false), field("3", false)]
    );
    // A category outside every record applies to every subject of the request.
    let f = ok("<r><meta><diagnosis>x</diagnosis></meta><p><user_id>1</user_id></p></r>");
    assert_eq!(subs(&f), [field("1", true)]);
    // A category element that is empty says nothing.
    let f = ok("<r><p><user_id>1</user_id><diagnosis/></p></r>");
    assert_eq!(subs(&f), [field("1", false)]);
    // A root subject element is a record per value.
    assert_eq!(subs(&ok("<user_id>42</user_id>")), [field("42", false)]);
    // Names are read: an unknown element name is data too.
    let f = ok("<a><n13800138000/></a>");
    assert_eq!(f.subject_count(), 1);
    let f = ok("<a><x a-13900139000=\"1\"/></a>");
    assert_eq!(f.subject_count(), 1);
}

#[test]
fn watched_fields_match_element_and_attribute_names() {
    let c = cfg()
        .with_watched_fields(&["survey_coordinates", "grid"])
        .unwrap();
    let f = inspect_bytes(
        &c,
        Some("text/xml"),
        None,
        b"<a><geo:survey_coordinates xmlns:geo=\"urn:g\">1,2</geo:survey_coordinates><b grid=\"7\"/></a>",
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(f.watched_seen, ["survey_coordinates", "grid"]);
}

#[test]
fn declared_gb18030_and_disagreeing_content_type() {
    let doc = "<?xml version=\"1.0\" encoding=\"GB18030\"?>\
        <员工列表><员工><user_id>张三</user_id><电话>13800138000</电话></员工></员工列表>";
    let body = encoding_rs::GB18030.encode(doc).0.into_owned();
    assert_ne!(body, doc.as_bytes());
    for ct in ["text/xml", "application/xml; charset=gb18030"] {
        let f = xml(ct, &body).unwrap();
        assert_eq!(subs(&f), [field("张三", false)], "{ct}");
        assert!(f.subjects()[0].categories.contains(Category::Contact));
    }
    for ct in ["text/xml; charset=utf-8", "text/xml; charset=gbk"] {
        assert_eq!(
            xml(ct, &body).unwrap_err(),
            Unreadable::EncodingConflict,
            "{ct}"
        );
    }
    // Without a declaration, the Content-Type charset.
    let plain = "<员工><user_id>张三</user_id></员工>";
    let body = encoding_rs::GBK.encode(plain).0.into_owned();
    let f = xml("text/xml; charset=GB2312", &body).unwrap();
    assert_eq!(subs(&f), [field("张三", false)]);
    assert!(xml("text/xml", &body).is_err(), "GBK bytes are no UTF-8");
    // UTF-16 with a byte order mark.
    let mut u16 = vec![0xFF, 0xFE];
    for u in "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a><user_id>7</user_id></a>".encode_utf16()
    {
        u16.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(subs(&xml("text/xml", &u16).unwrap()), [field("7", false)]);
    // A label outside the supported set.
    assert_eq!(
        xml(
            "text/xml",
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>"
        )
        .unwrap_err(),
        Unreadable::UnsupportedCharset
    );
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;

#[test]
fn doctypes_with_a_subset_or_external_identifier_are_unreadable() {
    for body in [
        BILLION_LAUGHS,
        "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><foo>&xxe;</foo>",
        "<!DOCTYPE foo SYSTEM \"http://127.0.0.1:9/x.dtd\"><foo/>",
        "<!DOCTYPE foo PUBLIC \"-//X//Y//EN\" \"x.dtd\"><foo/>",
        "<!DOCTYPE foo[]><foo/>",
    ] {
        let e = xml("application/xml", body.as_bytes()).unwrap_err();
        assert!(matches!(e, Unreadable::Doctype { .. }), "{body}: {e:?}");
        assert_eq!(e.kind(), "xml_doctype");
    }
    // A bare DOCTYPE declares nothing.
    assert_eq!(
        subs(&ok("<!DOCTYPE a><a><user_id>1</user_id></a>")),
        [field("1", false)]
    );
    // …but not after the root, and only once.
    assert!(xml("text/xml", b"<a/><!DOCTYPE a>").is_err());
    assert!(xml("text/xml", b"<!DOCTYPE a><!DOCTYPE a><a/>").is_err());
}

#[test]
fn malformed_truncated_and_too_deep() {
    let truncated = [
        "<a><user_id>1</user_id>",
        "<a><b>1</b",
        "<a><![CDATA[x",
        "<a><!-- x",
        "<a b=\"1",
        "<a>&amp",
    ];
    for body in truncated {
        let e = xml("text/xml", body.as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                Unreadable::Truncated { .. } | Unreadable::Malformed { .. }
            ),
            "{body}: {e:?}"
        );
    }
    for body in [
        "<a><b></a></b>",
        "<a></b>",
        "<a/><b/>",
        "x<a/>",
        "<a/>x",
        "<a b=\"1\" b=\"2\"/>",
        "<a b/>",
        "<a/><?xml version=\"1.0\"?>",
        " <?xml version=\"1.0\"?><a/>",
        "<!FOO><a/>",
    ] {
        assert!(
            matches!(
                xml("text/xml", body.as_bytes()),
                Err(Unreadable::Malformed { .. })
            ),
            "{body}"
        );
    }
    let c = cfg().with_max_depth(8);
    let deep = format!("{}{}", "<a>".repeat(9), "</a>".repeat(9));
    assert!(matches!(
        inspect_bytes(&c, Some("text/xml"), None, deep.as_bytes(), DATE, false),
        Err(Unreadable::TooDeep { .. })
    ));
    let ok8 = format!("{}{}", "<a>".repeat(8), "</a>".repeat(8));
    assert!(inspect_bytes(&c, Some("text/xml"), None, ok8.as_bytes(), DATE, false).is_ok());
    // Invalid UTF-8, and NUL.
    assert!(xml("text/xml", b"<a>\xff</a>").is_err());
    assert!(xml("text/xml", b"<a>\0</a>").is_err());
    // Empty is fine.
    assert_eq!(xml("text/xml", b"").unwrap().subject_count(), 0);
}

#[test]
fn records_over_the_limit_are_unreadable_and_envelopes_stream() {
    let c = cfg().with_max_record_bytes(256);
    let big = format!(
        "<r><row><user_id>1</user_id><note>{}</note></row></r>",
        "x".repeat(300)
    );
    let e = chunked(&c, "text/xml", None, big.as_bytes(), &[64]).unwrap_err();
    assert!(matches!(e, Unreadable::RecordTooLarge { .. }), "{e:?}");
    // A long envelope of small records is fine, and what it holds stays bounded.
    let mut body = String::from("<rows>");
    for i in 0..200 {
        body.push_str(&format!("<row><user_id>{i}</user_id></row>"));
    }
    body.push_str("</rows>");
    let r = chunked(&c, "text/xml", None, body.as_bytes(), &[50]).unwrap();
    assert_eq!(r.len(), 200);
    // A single tag or text over the limit.
    let tag = format!("<a b=\"{}\"/>", "y".repeat(300));
    assert!(chunked(&c, "text/xml", None, tag.as_bytes(), &[16]).is_err());
}

#[test]
fn a_soap_batch_is_released_record_by_record() {
    // As in JSON, an element that may still become a record (a subject field could follow)
    // holds the release back until it is larger than `max_record_bytes`; then the records in
    // it are released one by one.
    let c = cfg().with_max_record_bytes(64);
    let head = format!(
        "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body><Batch>{}",
        "<pad/>".repeat(15)
    );
    let rows = [
        "<Row><user_id>1</user_id><n>a</n></Row>",
        "<Row><user_id>2</user_id></Row>",
        "<Row><user_id>3</user_id></Row>",
    ];
    let tail = "</Batch></soap:Body></soap:Envelope>";
    let body = format!("{head}{}{tail}", rows.concat());
    let mut s = Scanner::new(Arc::new(c), Some("application/soap+xml"), None, DATE, false);
    s.feed(head.as_bytes()).unwrap();
    assert_eq!(
        s.release_offset(),
        head.len() as u64,
        "the envelopes are decided: no record of their own"
    );
    // Up to the middle of the second row.
    let row1_end = head.len() + rows[0].len();
    let cut = row1_end + 10;
    s.feed(&body.as_bytes()[head.len()..cut]).unwrap();
    let recs = s.take_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].subjects[0].id, b"1");
    assert_eq!(recs[0].decoded_span, head.len() as u64..row1_end as u64);
    assert_eq!(recs[0].release, row1_end as u64);
    assert_eq!(
        s.release_offset(),
        row1_end as u64,
        "nothing of the second row before it is judged"
    );
    s.feed(&body.as_bytes()[cut..]).unwrap();
    let recs = s.take_records();
    let ends: Vec<u64> = recs.iter().map(|r| r.release).collect();
    let e2 = (row1_end + rows[1].len()) as u64;
    assert_eq!(ends, [e2, e2 + rows[2].len() as u64]);
    s.finish().unwrap();
    assert_eq!(s.release_offset(), body.len() as u64);
    // A body without PI streams without being held, once its elements are decided.
    let mut s = Scanner::new(
        Arc::new(cfg().with_max_record_bytes(16)),
        Some("text/xml"),
        None,
        DATE,
        false,
    );
    s.feed(b"<a><b>x</b><b>y</b><b>").unwrap();
    assert_eq!(s.release_offset(), 19);
}

#[test]
fn media_types_parts_and_codings() {
    for t in [
        "application/xml",
        "text/xml",
        "application/soap+xml",
        "application/atom+xml",
        "image/svg+xml",
        "Application/XML; charset=\"utf-8\"",
    ] {
        assert!(
            matches!(body_type(t.as_bytes()).unwrap().kind, BodyKind::Xml { .. }),
            "{t}"
        );
    }
    let gz = encode("gzip", SOAP11.as_bytes());
    let f = inspect_bytes(&cfg(), Some("text/xml"), Some("gzip"), &gz, DATE, false).unwrap();
    assert_eq!(f.subject_count(), 2);
    let r = chunked(&cfg(), "text/xml", Some("gzip"), &gz, &[7]).unwrap();
    assert_eq!(r.len(), 2);
    // A multipart part by its own type, with its charset from the declaration.
    let gb = encoding_rs::GB18030
        .encode("<?xml version=\"1.0\" encoding=\"gb18030\"?><员工><user_id>张三</user_id></员工>")
        .0
        .into_owned();
    let mut mp = b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.xml\"\r\nContent-Type: text/xml\r\n\r\n".to_vec();
    mp.extend_from_slice(&gb);
    mp.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"g\"\r\nContent-Type: application/soap+xml\r\n\r\n");
    mp.extend_from_slice(SOAP11.as_bytes());
    mp.extend_from_slice(b"\r\n--B--\r\n");
    let f = inspect_bytes(
        &cfg(),
        Some("multipart/form-data; boundary=B"),
        None,
        &mp,
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(
        subs(&f),
        [
            field("E1001", true),
            field("E1002", false),
            field("张三", false)
        ]
    );
    let r = chunked(&cfg(), "multipart/form-data; boundary=B", None, &mp, &[5]).unwrap();
    assert_eq!(r.len(), 3);
}

#[test]
fn errors_and_debug_never_show_values() {
    let e = xml("text/xml", b"<a><user_id>secret-4711</user_id></b>").unwrap_err();
    assert!(!format!("{e} {e:?}").contains("secret"));
    let e = xml(
        "text/xml",
        b"<!DOCTYPE a SYSTEM \"file:///secret-4711\"><a/>",
    )
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("secret"));
    let mut s = Scanner::new(Arc::new(cfg()), Some("text/xml"), None, DATE, false);
    s.feed(b"<a><user_id>secret-47").unwrap();
    assert!(!format!("{s:?}").contains("secret"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(256)))]

    /// A SOAP envelope with XML-significant bytes written over it never panics, and is read
    /// (or refused) the same whole and cut in pieces: the same records when readable.
    #[test]
    fn mutated_xml_reads_the_same_however_cut(
        flips in prop::collection::vec(
            (any::<usize>(), prop_oneof![
                Just(b'<'), Just(b'>'), Just(b'&'), Just(b';'), Just(b'"'), Just(b'/'),
                Just(b'!'), Just(b'?'), Just(b'['), Just(b']'), Just(b'-'), Just(b' '),
                Just(0xEF), Just(0xBB), Just(0xBF), any::<u8>(),
            ]),
            0..4,
        ),
        sizes in prop::collection::vec(1usize..48, 1..4),
    ) {
        let mut body = SOAP11.as_bytes().to_vec();
        let n = body.len();
        for (at, b) in flips {
            body[at % n] = b;
        }
        let whole = chunked(&cfg(), "text/xml", None, &body, &[body.len()]);
        let cut = chunked(&cfg(), "text/xml", None, &body, &sizes);
        prop_assert_eq!(whole.is_ok(), cut.is_ok(), "{:?} / {:?}", whole, cut);
        if let (Ok(a), Ok(b)) = (whole, cut) {
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn json_documents_in_text_are_read_where_they_sit() {
    // A payload element holding serialized JSON: the phone in it is the record's person.
    let f = ok(
        r#"<rows><row><userId>u-1</userId><payload>{"m":"13800138000","diagnosis":"x"}</payload></row></rows>"#,
    );
    assert_eq!(subs(&f), [field("u-1", true)]);
    // A record inside the document, with no record around it.
    let f = ok(r#"<Event><data><![CDATA[{"customerId":"c-2"}]]></data></Event>"#);
    assert_eq!(subs(&f), [field("c-2", false)]);
    // A subject element holding a serialized list counts each element.
    let mut f = subs(&ok(r#"<row><user_id>["a","b"]</user_id></row>"#));
    f.sort();
    assert_eq!(f, [field("a", false), field("b", false)]);
    // Text that only looks like a document is text.
    let f = ok(r#"<row><user_id>[draft]</user_id></row>"#);
    assert_eq!(subs(&f), [field("[draft]", false)]);
}

//! Body formats read as strictly as the standards: `Content-Type`, charsets, multipart
//! framing, transfer encodings, CSV header rows, JSON labelled as a form. Each case is one a
//! careless or hostile client used to get PI past the gate.

use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id", "uid"],
        &Detector::ALL,
        &[("diagnosis", Category::Health)],
    )
}

const PHONE: &str = "13800138000";

/// Every chunking gives the same records (and `chunked` checks the release offsets).
fn read(ctype: &str, enc: Option<&str>, body: &[u8]) -> Result<Vec<Record>, Unreadable> {
    let c = cfg();
    let whole = chunked(&c, ctype, enc, body, &[body.len().max(1)]);
    for sizes in [&[1usize][..], &[2], &[3, 1, 7], &[64]] {
        let r = chunked(&c, ctype, enc, body, sizes);
        match (&r, &whole) {
            (Ok(a), Ok(b)) => assert_eq!(subjects_of(a), subjects_of(b), "chunking {sizes:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("chunking {sizes:?} changed the outcome: {r:?} vs {whole:?}"),
        }
    }
    whole
}

fn ids(records: &[Record]) -> Vec<(Namespace, String)> {
    let mut v: Vec<_> = records
        .iter()
        .flat_map(|r| r.subjects.iter())
        .map(|s| (s.namespace, String::from_utf8_lossy(&s.id).into_owned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn has_phone(records: &[Record]) -> bool {
    ids(records)
        .iter()
        .any(|(ns, id)| *ns == Namespace::CnMobile && id == PHONE)
}

fn utf16le(s: &str, bom: bool) -> Vec<u8> {
    let mut v = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
    for u in s.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v
}

fn utf16be(s: &str, bom: bool) -> Vec<u8> {
    let mut v = if bom { vec![0xFE, 0xFF] } else { Vec::new() };
    for u in s.encode_utf16() {
        v.extend_from_slice(&u.to_be_bytes());
    }
    v
}

#[test]
fn content_type_is_parsed_per_rfc_9110() {
    let ok = |ct: &str| body_type(ct.as_bytes());
    assert_eq!(
        ok("Application/JSON; Charset=\"UTF-8\"").unwrap().kind,
        BodyKind::Json
    );
    assert_eq!(ok("application/problem+json").unwrap().kind, BodyKind::Json);
    assert_eq!(
        ok("text/csv; header=absent").unwrap().kind,
        BodyKind::Csv { header: false }
    );
    assert_eq!(
        ok("multipart/form-data; boundary=\"a b'()+_,-./:=?\"")
            .unwrap()
            .kind,
        BodyKind::Multipart(b"a b'()+_,-./:=?".to_vec())
    );
    for bad in [
        "multipart/form-data; boundary=AA; boundary=BB",
        "multipart/form-data; boundary=\"AA;BB\"",
        "multipart/form-data",
        "multipart/form-data; boundary=\"\"",
        "multipart/form-data; boundary=\"ends with space \"",
        "multipart/form-data; boundary=\"é\"",
        "application/json; charset=utf-8; charset=utf-16",
        "application/json, text/csv",
        "text/csv; header=maybe",
        "application/json; charset = utf-8",
    ] {
        assert_eq!(ok(bad), Err(Unreadable::BadContentType), "{bad}");
    }
    assert_eq!(ok("text/plain"), Err(Unreadable::UnknownContentType));
    assert_eq!(
        ok("text/csv; charset=latin1"),
        Err(Unreadable::UnsupportedCharset)
    );
    assert_eq!(
        ok("multipart/form-data; boundary=b; charset=gbk"),
        Err(Unreadable::UnsupportedCharset)
    );
}

#[test]
fn a_repeated_content_type_or_encoding_header_is_unreadable() {
    let c = Arc::new(cfg());
    let mut h = http::HeaderMap::new();
    h.append(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let mut s = Scanner::for_headers(c.clone(), &h, DATE, false);
    s.feed(b"{}").unwrap();
    s.finish().unwrap();
    h.append("content-type", http::HeaderValue::from_static("text/csv"));
    let mut s = Scanner::for_headers(c.clone(), &h, DATE, false);
    assert_eq!(s.feed(b"{}"), Err(Unreadable::BadContentType));
    let mut h = http::HeaderMap::new();
    h.append(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    h.append(
        "content-encoding",
        http::HeaderValue::from_static("identity"),
    );
    h.append("content-encoding", http::HeaderValue::from_static("gzip"));
    let mut s = Scanner::for_headers(c, &h, DATE, false);
    assert_eq!(s.feed(b"{}"), Err(Unreadable::UnknownEncoding));
}

#[test]
fn utf16_and_chinese_charsets_are_decoded_in_every_text_type() {
    let csv = format!("name,tel\r\n张三,{PHONE}\r\n");
    let form = format!("name=%E5%BC%A0&tel={PHONE}");
    let json = format!("{{\"tel\":\"{PHONE}\"}}");
    for (ct, text) in [
        ("text/csv", &csv),
        ("application/x-www-form-urlencoded", &form),
        ("application/json", &json),
        ("application/x-ndjson", &json),
    ] {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("utf-16", utf16le(text, true)),
            ("UTF-16", utf16be(text, true)),
            ("utf-16le", utf16le(text, false)),
            ("utf-16be", utf16be(text, true)),
            ("gb18030", encoding_rs::GB18030.encode(text).0.into_owned()),
            ("gbk", encoding_rs::GBK.encode(text).0.into_owned()),
            ("gb2312", encoding_rs::GBK.encode(text).0.into_owned()),
            (
                "big5",
                encoding_rs::BIG5
                    .encode(&text.replace('张', "張"))
                    .0
                    .into_owned(),
            ),
        ];
        for (cs, body) in cases {
            let full = format!("{ct}; charset={cs}");
            let recs = read(&full, None, &body).unwrap_or_else(|e| panic!("{full}: {e:?}"));
            assert!(has_phone(&recs), "{full}");
        }
    }
}

#[test]
fn charset_after_a_content_coding_keeps_release_offsets_of_the_original_bytes() {
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("{{\"user_id\":{i},\"n\":\"名字\"}}\n"));
    }
    let body = super::formats::encode("gzip", &utf16le(&text, true));
    let recs = read("application/x-ndjson; charset=utf-16", Some("gzip"), &body).unwrap();
    assert_eq!(recs.len(), 3000);
    let plain = utf16le(&text, true);
    let recs = read("application/x-ndjson; charset=utf-16", None, &plain).unwrap();
    assert_eq!(recs.len(), 3000);
    // Record k's release never reaches into record k + 1 (its bytes as sent).
    let mut starts = Vec::new();
    let mut at = 2u64;
    for line in text.split_inclusive('\n') {
        starts.push(at);
        at += 2 * line.encode_utf16().count() as u64;
    }
    for (k, r) in recs.iter().enumerate().take(2999) {
        assert!(r.release <= starts[k + 1], "record {k}");
    }
    assert!(
        recs[2998].release > plain.len() as u64 / 2,
        "releases progress"
    );
}

#[test]
fn utf16_sent_as_utf8_is_unreadable_not_read_as_digits_between_nuls() {
    for ct in [
        "text/csv",
        "application/x-www-form-urlencoded",
        "application/json",
    ] {
        let body = utf16le(&format!("tel,{PHONE}\n"), false);
        assert!(read(ct, None, &body).is_err(), "{ct}");
    }
    let body = utf16le(&format!("a,{PHONE}"), false);
    assert_eq!(
        read("text/csv; charset=utf-16", None, &body).unwrap_err(),
        Unreadable::UnsupportedCharset,
        "utf-16 without a BOM: readers disagree on the byte order"
    );
    assert_eq!(
        read("text/csv; charset=utf-16le", None, &utf16be("a,b", true)).unwrap_err(),
        Unreadable::UnsupportedCharset
    );
    assert!(matches!(
        read("text/csv; charset=utf-16le", None, b"a,b\n1").unwrap_err(),
        Unreadable::InvalidCharset { .. }
    ));
    assert_eq!(
        read("text/csv; charset=iso-8859-1", None, b"a,b").unwrap_err(),
        Unreadable::UnsupportedCharset
    );
}

#[test]
fn csv_header_row_one_line_and_header_absent() {
    // One line, no newline: the header row alone, its cells inspected.
    let recs = read("text/csv", None, PHONE.as_bytes()).unwrap();
    assert!(has_phone(&recs));
    let recs = read("text/csv", None, format!("a,{PHONE},b").as_bytes()).unwrap();
    assert!(has_phone(&recs));
    // PI in a header cell of a longer body.
    let recs = read(
        "text/csv",
        None,
        format!("uid,{PHONE}\r\n1,2\r\n").as_bytes(),
    )
    .unwrap();
    assert!(has_phone(&recs));
    assert!(ids(&recs).contains(&(Namespace::Field, "1".to_owned())));
    // header=absent: no header names, every row a record of free values.
    let body = format!("uid,x\r\n7,{PHONE}\r\n");
    let recs = read("text/csv; header=absent", None, body.as_bytes()).unwrap();
    assert_eq!(recs.len(), 1);
    assert!(has_phone(&recs));
    assert!(!ids(&recs).iter().any(|(ns, _)| *ns == Namespace::Field));
    // A header row without PI makes no record.
    let recs = read("text/csv", None, b"name,uid\r\n").unwrap();
    assert!(recs.is_empty());
}

#[test]
fn csv_bytes_that_only_begin_like_a_bom_are_data() {
    // U+FFFC starts with 0xEF as the UTF-8 BOM does: it is text, not half a BOM (found by the
    // differential test).
    for body in [
        format!("\u{fffc}{PHONE}\n"),
        format!("\u{fffc}\nx,{PHONE}\n"),
        format!("\u{feff}\u{feff}{PHONE}\n"),
    ] {
        let recs = read("text/csv", None, body.as_bytes()).unwrap();
        assert!(has_phone(&recs), "{body:?}");
    }
    // A real BOM is skipped: the header name is found.
    let recs = read("text/csv", None, "\u{feff}uid\n7\n".as_bytes()).unwrap();
    assert!(ids(&recs).contains(&(Namespace::Field, "7".to_owned())));
    // Bodies shorter than a BOM.
    assert!(read("text/csv", None, "\u{fffc}".as_bytes()).is_ok());
    assert!(read("text/csv", None, &[0xEF, 0xBB]).is_err());
    assert!(read("text/csv", None, &[0xEF, 0xBB, 0xBF])
        .unwrap()
        .is_empty());
}

#[test]
fn a_json_document_labelled_as_a_form_is_read_as_json_too() {
    let ct = "application/x-www-form-urlencoded";
    let recs = read(ct, None, br#"{"user_id":"u-1","x":[1,2]}"#).unwrap();
    assert!(ids(&recs).contains(&(Namespace::Field, "u-1".to_owned())));
    let recs = read(ct, None, format!(r#" [{{"tel":"{PHONE}"}}]"#).as_bytes()).unwrap();
    assert!(has_phone(&recs));
    assert!(read(ct, None, br#"{"user_id":"u-1""#).is_err());
    // An ordinary form is unaffected.
    let recs = read(ct, None, b"uid=5&x=%7B").unwrap();
    assert_eq!(ids(&recs), [(Namespace::Field, "5".to_owned())]);
}

const MP: &str = "multipart/form-data; boundary=BB";

fn part(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("--BB\r\n{headers}\r\n").into_bytes();
    v.extend_from_slice(body);
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn multipart_preamble_epilogue_and_part_parameters_are_inspected() {
    let plain = part("Content-Disposition: form-data; name=\"a\"\r\n", b"x");
    let mut body = format!("this is the preamble {PHONE}\r\n").into_bytes();
    body.extend_from_slice(&plain);
    body.extend_from_slice(b"--BB--\r\n");
    assert!(has_phone(&read(MP, None, &body).unwrap()), "preamble");

    let mut body = plain.clone();
    body.extend_from_slice(format!("--BB--\r\nepilogue {PHONE}").as_bytes());
    assert!(has_phone(&read(MP, None, &body).unwrap()), "epilogue");

    for h in [
        format!("Content-Disposition: form-data; name=\"{PHONE}\"\r\n"),
        format!("Content-Disposition: form-data; name=\"a\"; filename=\"{PHONE}.txt\"\r\n"),
        format!("Content-Disposition: form-data; name=\"a\"; filename*=UTF-8''{PHONE}.txt\r\n"),
        format!("Content-Disposition: form-data; name=\"a\"\r\nX-Note: {PHONE}\r\n"),
    ] {
        let mut body = part(&h, b"x");
        body.extend_from_slice(b"--BB--");
        assert!(has_phone(&read(MP, None, &body).unwrap()), "{h}");
    }
}

#[test]
fn multipart_transfer_and_content_encodings_and_charsets_are_decoded() {
    let b64 = "MTM4MDAx\r\nMzgwMDA=";
    let qp = "138=\r\n0013=38000";
    for (h, data) in [
        (
            "Content-Transfer-Encoding: base64\r\n",
            b64.as_bytes().to_vec(),
        ),
        (
            "Content-Transfer-Encoding: quoted-printable\r\n",
            qp.as_bytes().to_vec(),
        ),
        (
            "Content-Type: text/plain; charset=utf-16\r\n",
            utf16le(PHONE, true),
        ),
        (
            "Content-Type: text/csv; charset=gb18030\r\nContent-Encoding: gzip\r\n",
            super::formats::encode("gzip", format!("手机\r\n{PHONE}\r\n").as_bytes()),
        ),
        (
            "Content-Type: application/json\r\nContent-Transfer-Encoding: base64\r\n",
            b"eyJ0ZWwiOiIxMzgwMDEzODAwMCJ9".to_vec(),
        ),
    ] {
        let headers = format!("Content-Disposition: form-data; name=\"a\"\r\n{h}");
        let mut body = part(&headers, &data);
        body.extend_from_slice(b"--BB--");
        let recs = read(MP, None, &body).unwrap_or_else(|e| panic!("{h}: {e:?}"));
        assert!(has_phone(&recs), "{h}");
    }
    for h in [
        "Content-Transfer-Encoding: x-uuencode\r\n",
        "Content-Encoding: compress\r\n",
        "Content-Type: text/plain; charset=latin1\r\n",
        "Content-Type: image/png\r\n",
        "Content-Type: multipart/mixed; boundary=CC\r\n",
    ] {
        let headers = format!("Content-Disposition: form-data; name=\"a\"\r\n{h}");
        let mut body = part(&headers, b"x");
        body.extend_from_slice(b"--BB--");
        assert!(read(MP, None, &body).is_err(), "{h}");
    }
}

#[test]
fn multipart_ambiguity_is_unreadable() {
    let ok = {
        let mut b = part("Content-Disposition: form-data; name=\"a\"\r\n", b"x");
        b.extend_from_slice(b"--BB--");
        b
    };
    read(MP, None, &ok).unwrap();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "a JSON body labelled multipart containing --BB--",
            format!(r#"{{"tel":"{PHONE}","x":"--BB--"}}"#).into_bytes(),
        ),
        (
            "the boundary inside a part, after a bare LF",
            [&part("Content-Disposition: form-data; name=\"a\"\r\n", b"x\n--BB\r\nContent-Disposition: form-data; name=\"uid\"\r\n\r\n5")[..], b"--BB--"].concat(),
        ),
        (
            "the boundary inside a part, mid-line",
            [&part("Content-Disposition: form-data; name=\"a\"\r\n", b"x --BB y")[..], b"--BB--"].concat(),
        ),
        (
            "a part header ended by bare LFs",
            b"--BB\r\nContent-Disposition: form-data; name=\"a\"\n\nx\r\n--BB--".to_vec(),
        ),
        (
            "a folded part header",
            b"--BB\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\nx\r\n--BB--".to_vec(),
        ),
        (
            "two Content-Disposition headers",
            [&part("Content-Disposition: form-data; name=\"a\"\r\nContent-Disposition: form-data; name=\"uid\"\r\n", b"5")[..], b"--BB--"].concat(),
        ),
        (
            "a repeated disposition parameter",
            [&part("Content-Disposition: form-data; name=\"a\"; name=\"uid\"\r\n", b"5")[..], b"--BB--"].concat(),
        ),
        (
            "an RFC 2231 continuation",
            [&part("Content-Disposition: form-data; name*0=\"u\"; name*1=\"id\"\r\n", b"5")[..], b"--BB--"].concat(),
        ),
        (
            "a delimiter followed by garbage",
            b"--BB\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--BBx\r\n--BB--".to_vec(),
        ),
        (
            "a delimiter followed by a bare LF",
            b"--BB\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--BB--".to_vec(),
        ),
        ("no close delimiter", part("Content-Disposition: form-data; name=\"a\"\r\n", b"x")),
        (
            "a NUL in a text field",
            [&part("Content-Disposition: form-data; name=\"a\"\r\n", b"1\x003")[..], b"--BB--"].concat(),
        ),
    ];
    for (what, body) in bad {
        assert!(read(MP, None, &body).is_err(), "{what}");
    }
}

#[test]
fn multipart_text_fields_and_nested_parts_still_count() {
    let mut body = b"--BB\r\n".to_vec();
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"uid\"\r\n\r\n42\r\n");
    body.extend_from_slice(
        b"--BB\r\nContent-Disposition: form-data; name=\"diagnosis\"\r\n\r\nflu\r\n",
    );
    body.extend_from_slice(b"--BB\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nuid\r\n7\r\n8\r\n");
    body.extend_from_slice(b"--BB--\r\n");
    let recs = read(MP, None, &body).unwrap();
    let got = ids(&recs);
    for id in ["42", "7", "8"] {
        assert!(got.contains(&(Namespace::Field, id.to_owned())), "{id}");
    }
    let form = recs.iter().find(|r| r.subjects[0].id == b"42").unwrap();
    assert!(form.subjects[0].sensitive);
}

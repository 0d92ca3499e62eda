//! Protobuf and gRPC bodies: the schemaless walker on hand-made encodings, the gRPC de-framer
//! (every split of a body gives the same records; hostile framing), and agreement with JSON.

use std::io::Write;
use std::sync::Arc;

use super::*;

const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";

/// A varint.
pub(super) fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited field.
pub(super) fn ld(n: u32, v: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    varint(u64::from(n) << 3 | 2, &mut o);
    varint(v.len() as u64, &mut o);
    o.extend_from_slice(v);
    o
}

/// A varint field.
pub(super) fn vi(n: u32, v: u64) -> Vec<u8> {
    let mut o = Vec::new();
    varint(u64::from(n) << 3, &mut o);
    varint(v, &mut o);
    o
}

/// A gRPC frame.
pub(super) fn frame(compressed: bool, msg: &[u8]) -> Vec<u8> {
    let mut o = vec![u8::from(compressed)];
    o.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    o.extend_from_slice(msg);
    o
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A customer as the fixture's `partner.v1.Customer` encodes it.
pub(super) fn customer(name: &str, phone: &str, id: &str, city: &str) -> Vec<u8> {
    let mut m = ld(1, name.as_bytes());
    m.extend(ld(2, phone.as_bytes()));
    m.extend(ld(3, id.as_bytes()));
    m.extend(ld(4, &ld(1, city.as_bytes())));
    m
}

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id"],
        &[Detector::CnResidentId, Detector::CnMobile, Detector::Email],
        &[("diagnosis", Category::Health)],
    )
}

fn pb(cfg: &InspectConfig, body: &[u8]) -> Result<Findings, Unreadable> {
    inspect_bytes(cfg, Some("application/x-protobuf"), None, body, DATE, false)
}

fn ids(f: &Findings) -> Vec<(Namespace, String)> {
    f.subjects()
        .into_iter()
        .map(|s| (s.namespace, String::from_utf8(s.id).unwrap()))
        .collect()
}

/// Feeds a gRPC body in chunks of the given sizes through [`Scanner::for_request`]; checks
/// that nothing of a message is released before it is judged.
fn grpc(
    cfg: &InspectConfig,
    ctype: &str,
    grpc_encoding: Option<&str>,
    body: &[u8],
    sizes: &[usize],
) -> Result<Vec<Record>, Unreadable> {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, ctype.parse().unwrap());
    if let Some(e) = grpc_encoding {
        h.insert("grpc-encoding", e.parse().unwrap());
    }
    let mut s = Scanner::for_request(
        Arc::new(cfg.clone()),
        &h,
        Some("/partner.v1.CustomerService/UploadMany"),
        DATE,
        false,
    );
    let ends = frame_ends(body);
    let mut out = Vec::new();
    let (mut i, mut k) = (0, 0);
    while i < body.len() {
        let n = sizes[k % sizes.len()].max(1).min(body.len() - i);
        s.feed(&body[i..i + n])?;
        i += n;
        k += 1;
        let rel = s.release_offset();
        // The frontier is the end of the last whole frame fed.
        let whole = ends.iter().copied().filter(|e| *e <= i).max().unwrap_or(0);
        assert_eq!(rel, whole as u64, "released past a message not yet judged");
        for r in s.records().iter() {
            assert!(r.release() <= rel);
        }
        out.extend(s.take_records());
    }
    s.finish()?;
    out.extend(s.take_records());
    Ok(out)
}

/// Ends of the frames of a well-framed body.
fn frame_ends(body: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = 0;
    while i + 5 <= body.len() {
        let len = u32::from_be_bytes(body[i + 1..i + 5].try_into().unwrap()) as usize;
        i += 5 + len;
        if i <= body.len() {
            v.push(i);
        }
    }
    v
}

#[test]
fn schemaless_text_nested_messages_and_varint_numbers_are_read() {
    let c = cfg();
    // A text field, a nested message holding an ID number, and a mobile number as a varint.
    let mut m = ld(1, "张三".as_bytes());
    m.extend(ld(4, &ld(9, ID.as_bytes())));
    m.extend(vi(6, 13_812_345_678));
    let f = pb(&c, &m).unwrap();
    assert_eq!(
        ids(&f),
        vec![
            (Namespace::CnResidentId, ID.to_owned()),
            (Namespace::CnMobile, MOBILE.to_owned()),
        ]
    );
    // One message, one record.
    assert_eq!(f.records.len(), 1);
    // Fixed 64/32-bit fields are not read without a schema (a double's bits are not a number).
    let mut m = vec![0x09];
    m.extend(13_812_345_678u64.to_le_bytes());
    assert_eq!(pb(&c, &m).unwrap().subject_count(), 0);
}

#[test]
fn a_field_that_is_text_and_a_message_is_read_as_both() {
    let c = cfg();
    // "\x12\x0b13812345678" is UTF-8 text and also a message whose field 2 is the number.
    let inner = ld(2, MOBILE.as_bytes());
    assert!(std::str::from_utf8(&inner).is_ok());
    let f = pb(&c, &ld(1, &inner)).unwrap();
    assert_eq!(ids(&f), vec![(Namespace::CnMobile, MOBILE.to_owned())]);
    // Binary that is a message but not text: still walked.
    let mut bin = ld(2, format!("+86 {MOBILE}").as_bytes());
    bin.extend(vi(3, 300));
    bin.push(0x25);
    bin.extend([0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(std::str::from_utf8(&bin).is_err());
    let f = pb(&c, &ld(1, &bin)).unwrap();
    assert_eq!(f.subject_count(), 1);
}

#[test]
fn protobuf_counts_the_people_json_counts() {
    let c = cfg();
    let m = customer("张三", MOBILE, ID, "北京");
    let f = pb(&c, &m).unwrap();
    let j = json(
        &c,
        &format!(
            r#"{{"name":"张三","phone":"{MOBILE}","id_number":"{ID}","address":{{"city":"北京"}}}}"#
        ),
    );
    assert_eq!(f.subjects(), j.subjects());
    assert_eq!(f.records.len(), j.records.len());
}

#[test]
fn no_field_name_rule_matches_a_field_number() {
    // Configured names that are numbers or number paths never match without a schema.
    let c = InspectConfig::for_tests(
        &["1", "1.1"],
        &[Detector::CnMobile],
        &[("2", Category::Health)],
    );
    let mut m = ld(1, b"abc");
    m.extend(ld(2, b"x"));
    m.extend(ld(3, &ld(1, b"y")));
    let f = pb(&c, &m).unwrap();
    assert_eq!(f.subject_count(), 0);
    assert_eq!(f.outside(), CategorySet::EMPTY);
}

#[test]
fn malformed_wire_data_is_unreadable() {
    let c = cfg();
    let cases: [&[u8]; 7] = [
        &[0x08, 0x96],       // truncated varint
        &[0x12, 0x05, b'a'], // length beyond the end
        &[0x0E, 0],          // wire type 6
        &[0x0F, 0],          // wire type 7
        &[0x00, 0],          // field number 0
        &[0x0B, 0x0C],       // a group
        &[0x08, 0x01, 0x12], // a tag without its length
    ];
    for bad in cases {
        let e = pb(&c, bad).unwrap_err();
        assert!(matches!(e, Unreadable::Malformed { .. }), "{bad:?}: {e:?}");
    }
    // A field that does not parse inside a string is just bytes, not an error.
    assert!(pb(&c, &ld(1, &[0x12, 0x05, b'a'])).is_ok());
    // The empty body is the empty message.
    assert_eq!(pb(&c, b"").unwrap().subject_count(), 0);
}

#[test]
fn nesting_is_bounded_by_max_depth() {
    let nest = |depth: usize| {
        let mut m = ld(1, MOBILE.as_bytes());
        for _ in 1..depth {
            m = ld(1, &m);
        }
        m
    };
    let c = cfg().with_max_depth(8);
    // The body is one message; `depth` messages in all with the innermost text's.
    assert_eq!(pb(&c, &nest(7)).unwrap().subject_count(), 1);
    let e = pb(&c, &nest(9)).unwrap_err();
    assert!(matches!(e, Unreadable::TooDeep { .. }), "{e:?}");
}

#[test]
fn a_protobuf_body_over_max_record_bytes_is_a_record_over_the_limit() {
    let c = cfg().with_max_record_bytes(100);
    let m = ld(1, &[b'a'; 200]);
    assert_eq!(
        pb(&c, &m).unwrap_err(),
        Unreadable::RecordTooLarge { offset: 0 }
    );
}

#[test]
fn media_types_and_message_type_parameters() {
    for (t, web) in [
        ("application/grpc", false),
        ("application/grpc+proto", false),
        ("application/grpc-web", true),
        ("Application/gRPC-Web+proto", true),
    ] {
        assert_eq!(
            body_type(t.as_bytes()).unwrap().kind,
            BodyKind::Grpc {
                web,
                message_type: None
            }
        );
    }
    assert_eq!(
        body_type(b"application/x-protobuf; proto=partner.v1.Customer")
            .unwrap()
            .kind,
        BodyKind::Protobuf {
            message_type: Some("partner.v1.Customer".into())
        }
    );
    assert_eq!(
        body_type(b"application/protobuf; messageType=\".partner.v1.Customer\"")
            .unwrap()
            .kind,
        BodyKind::Protobuf {
            message_type: Some("partner.v1.Customer".into())
        }
    );
    for bad in [
        "application/x-protobuf; proto=a.B; messageType=a.B",
        "application/x-protobuf; proto=\"a..B\"",
        "application/x-protobuf; proto=\"a B\"",
    ] {
        assert_eq!(
            body_type(bad.as_bytes()).unwrap_err(),
            Unreadable::BadContentType,
            "{bad}"
        );
    }
    // gRPC with JSON messages is not read.
    assert_eq!(
        body_type(b"application/grpc+json").unwrap_err(),
        Unreadable::UnknownContentType
    );
}

fn two_customers() -> Vec<u8> {
    let mut b = frame(false, &customer("张三", MOBILE, ID, "北京"));
    b.extend(frame(false, &[]));
    b.extend(frame(false, &customer("李四", "13987654321", "", "上海")));
    b
}

#[test]
fn grpc_messages_are_records_judged_one_by_one() {
    let c = cfg();
    let body = two_customers();
    let r = grpc(&c, "application/grpc", None, &body, &[body.len()]).unwrap();
    assert_eq!(r.len(), 2);
    let ends = frame_ends(&body);
    assert_eq!(r[0].release, ends[0] as u64);
    assert_eq!(r[0].decoded_span, 0..ends[0] as u64);
    assert_eq!(r[1].release, ends[2] as u64);
    assert_eq!(r[0].subjects.len(), 2);
    assert_eq!(r[1].subjects.len(), 1);
}

#[test]
fn every_split_of_a_grpc_body_gives_the_same_records() {
    let c = cfg();
    let mut body = two_customers();
    body.extend(frame(true, &gzip(&customer("王五", "13700000000", "", ""))));
    let whole = grpc(&c, "application/grpc", Some("gzip"), &body, &[body.len()]).unwrap();
    assert_eq!(whole.len(), 3);
    for cut in 1..body.len() {
        let r = grpc(
            &c,
            "application/grpc",
            Some("gzip"),
            &body,
            &[cut, body.len()],
        )
        .unwrap();
        assert_eq!(r, whole, "cut at {cut}");
    }
    for size in 1..12 {
        let r = grpc(&c, "application/grpc-web", Some("gzip"), &body, &[size]).unwrap();
        assert_eq!(r, whole, "chunks of {size}");
    }
}

#[test]
fn grpc_compressed_messages_are_decoded_by_grpc_encoding() {
    let c = cfg();
    let m = customer("张三", MOBILE, ID, "北京");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&m).unwrap();
    let deflated = z.finish().unwrap();
    let zstd = zstd::bulk::compress(&m, 3).unwrap();
    for (enc, data) in [("gzip", gzip(&m)), ("deflate", deflated), ("zstd", zstd)] {
        let r = grpc(&c, "application/grpc", Some(enc), &frame(true, &data), &[7]).unwrap();
        assert_eq!(r.len(), 1, "{enc}");
        assert_eq!(r[0].subjects.len(), 2, "{enc}");
    }
    // An uncompressed message in a call that names an encoding the gate does not decode.
    let r = grpc(
        &c,
        "application/grpc",
        Some("snappy"),
        &frame(false, &m),
        &[99],
    )
    .unwrap();
    assert_eq!(r.len(), 1);
}

#[test]
fn hostile_grpc_framing_is_unreadable() {
    let c = cfg().with_max_record_bytes(1024);
    let m = customer("张三", MOBILE, ID, "北京");
    let ct = "application/grpc";
    // A length prefix larger than the body: truncated.
    let mut b = frame(false, &m);
    b[4] += 10;
    assert!(matches!(
        grpc(&c, ct, None, &b, &[3]).unwrap_err(),
        Unreadable::Truncated { .. }
    ));
    // A body ending inside a frame header.
    let mut b = frame(false, &m);
    b.extend([0, 0]);
    assert!(matches!(
        grpc(&c, ct, None, &b, &[b.len()]).unwrap_err(),
        Unreadable::Truncated { .. }
    ));
    // A length prefix over max_record_bytes: refused at the header, before the message.
    let b = [0, 0, 0, 0x10, 0];
    assert_eq!(
        grpc(&c, ct, None, &b, &[5]).unwrap_err(),
        Unreadable::RecordTooLarge { offset: 0 }
    );
    // The compressed flag without grpc-encoding, or with identity, or with one not decoded.
    for enc in [None, Some("identity"), Some("snappy")] {
        assert_eq!(
            grpc(&c, ct, enc, &frame(true, &gzip(&m)), &[64]).unwrap_err(),
            Unreadable::UnknownEncoding,
            "{enc:?}"
        );
    }
    // Reserved flag bits; a trailer frame from a gRPC-Web client.
    let mut b = frame(false, &m);
    b[0] = 2;
    assert!(matches!(
        grpc(&c, ct, None, &b, &[64]).unwrap_err(),
        Unreadable::Malformed { offset: 0 }
    ));
    let mut b = frame(false, b"grpc-status:0\r\n");
    b[0] = 0x80;
    assert!(matches!(
        grpc(&c, "application/grpc-web", None, &b, &[64]).unwrap_err(),
        Unreadable::Malformed { offset: 0 }
    ));
    // Malformed wire data in the second message: the first was judged and released.
    let mut b = frame(false, &m);
    let first = b.len();
    b.extend(frame(false, &[0x08, 0x96]));
    let mut h = http::HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
    let mut s = Scanner::for_request(&c, &h, None, DATE, false);
    let e = s.feed(&b).unwrap_err();
    assert_eq!(
        e,
        Unreadable::Malformed {
            offset: first as u64 + 5
        }
    );
    assert_eq!(s.records().len(), 1);
    // A gzip bomb inside a message.
    let bomb = gzip(&vec![b'a'; 10 << 20]);
    assert!(bomb.len() < 64 << 10);
    let e = grpc(&cfg(), ct, Some("gzip"), &frame(true, &bomb), &[4096]).unwrap_err();
    assert_eq!(e, Unreadable::Bomb);
    // The same message decoded but over max_record_bytes.
    let big = gzip(&ld(1, &[b'a'; 2000]));
    assert_eq!(
        grpc(&c, ct, Some("gzip"), &frame(true, &big), &[4096]).unwrap_err(),
        Unreadable::Bomb
    );
    // A compressed frame with nothing in it.
    assert!(grpc(&c, ct, Some("gzip"), &frame(true, &[]), &[5]).is_err());
}

#[test]
fn ten_thousand_zero_length_grpc_messages_are_fine() {
    let c = cfg();
    let mut b = Vec::new();
    for _ in 0..10_000 {
        b.extend(frame(false, &[]));
    }
    b.extend(frame(false, &customer("张三", MOBILE, "", "")));
    let r = grpc(&c, "application/grpc", None, &b, &[4096]).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].decoded_span.start, 50_000);
}

#[test]
fn an_empty_grpc_body_and_an_unreadable_content_encoding() {
    let c = cfg();
    assert!(grpc(&c, "application/grpc", None, b"", &[1])
        .unwrap()
        .is_empty());
    // grpc-encoding sent twice.
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        "application/grpc".parse().unwrap(),
    );
    h.append("grpc-encoding", "gzip".parse().unwrap());
    h.append("grpc-encoding", "identity".parse().unwrap());
    let m = customer("张三", MOBILE, "", "");
    let mut s = Scanner::for_request(&c, &h, None, DATE, false);
    assert_eq!(
        s.feed(&frame(true, &gzip(&m))).unwrap_err(),
        Unreadable::UnknownEncoding
    );
}

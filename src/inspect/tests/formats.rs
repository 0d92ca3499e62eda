//! Tricky cases per format.

use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id", "uid"],
        &Detector::ALL,
        &[("diagnosis", Category::Health)],
    )
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

fn all_chunkings(ctype: &str, body: &[u8]) -> Result<Vec<Record>, Unreadable> {
    let c = cfg();
    let whole = chunked(&c, ctype, None, body, &[body.len().max(1)]);
    for sizes in [&[1usize][..], &[2], &[3, 1, 7], &[5, 13]] {
        let r = chunked(&c, ctype, None, body, sizes);
        assert_eq!(r, whole, "chunking {sizes:?} changed the result");
    }
    whole
}

#[test]
fn json_table() {
    let f = |_: &str, id: &str| (Namespace::Field, id.to_owned());
    let p = |id: &str| (Namespace::CnMobile, id.to_owned());
    let cases: Vec<(&str, Vec<(Namespace, String)>)> = vec![
        (r#"{"user_id":"a\"b"}"#, vec![f("", "a\"b")]),
        (r#"{"user\u005fid":"\u0041\u4e2d"}"#, vec![f("", "A中")]),
        (r#"{"user_id":"\ud83d\ude00"}"#, vec![f("", "😀")]),
        (r#"{"user_id":1.5e3}"#, vec![f("", "1.5e3")]),
        (r#"{"user_id":-0}"#, vec![f("", "-0")]),
        ("\u{feff}{\"user_id\":\"x\"}", vec![f("", "x")]),
        (
            r#"{"user_id":null,"note":"call 13800138000"}"#,
            vec![p("13800138000")],
        ),
        (r#"{"user_id":true}"#, vec![]),
        (r#"{"n":"x13800138000"}"#, vec![p("13800138000")]),
        (r#"{"n":"913800138000"}"#, vec![]),
        (
            r#"{"n":"13800138000 13900139000"}"#,
            vec![p("13800138000"), p("13900139000")],
        ),
        (r#"{"n":"0086 138 0013 8000"}"#, vec![p("13800138000")]),
        (r#"{"n":12345678901234567890}"#, vec![]),
        (r#"{"n":13800138000}"#, vec![p("13800138000")]),
        (
            r#"{"m":"Mail: A.B@Example.COM."}"#,
            vec![(Namespace::Email, "a.b@example.com".into())],
        ),
        (
            r#"{"c":"4111 1111 1111 1111"}"#,
            vec![(Namespace::BankCard, "4111111111111111".into())],
        ),
        (r#"{"c":"4111 1111 1111 1112"}"#, vec![]),
        (r#"  [ ]  "#, vec![]),
        (
            r#"[{"uid":2},{"user_id":"2"},"13800138000"]"#,
            vec![f("", "2"), p("13800138000")],
        ),
    ];
    for (body, want) in cases {
        let got = all_chunkings("application/json", body.as_bytes())
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(ids(&got), want, "{body}");
    }
}

#[test]
fn json_malformed_and_truncated() {
    let c = cfg();
    let bad = [
        r#"{"a":1,}"#,
        r#"[1,]"#,
        r#"{"a" 1}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":tru}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00"}"#,
        r#"{} {}"#,
        r#"}"#,
    ];
    for b in bad {
        let r = inspect_bytes(
            &c,
            Some("application/json"),
            None,
            b.as_bytes(),
            DATE,
            false,
        );
        assert!(matches!(r, Err(Unreadable::Malformed { .. })), "{b}: {r:?}");
    }
    for b in [r#"{"a":1"#, r#"{"a":"x"#, r#"[1,2"#, r#"{"a":tr"#] {
        let r = inspect_bytes(
            &c,
            Some("application/json"),
            None,
            b.as_bytes(),
            DATE,
            false,
        );
        assert!(matches!(r, Err(Unreadable::Truncated { .. })), "{b}: {r:?}");
    }
    let r = inspect_bytes(
        &c,
        Some("application/json"),
        None,
        b"{\"a\":\"\xff\"}",
        DATE,
        false,
    );
    assert!(matches!(r, Err(Unreadable::InvalidUtf8 { .. })));
    let deep = "[".repeat(65) + &"]".repeat(65);
    let r = inspect_bytes(
        &c,
        Some("application/json"),
        None,
        deep.as_bytes(),
        DATE,
        false,
    );
    assert!(matches!(r, Err(Unreadable::TooDeep { .. })));
    let ok = "[".repeat(64) + &"]".repeat(64);
    assert!(inspect_bytes(
        &c,
        Some("application/json"),
        None,
        ok.as_bytes(),
        DATE,
        false
    )
    .is_ok());
    let r = inspect_bytes(&c, Some("image/png"), None, b"x", DATE, false);
    assert_eq!(r.unwrap_err(), Unreadable::UnknownContentType);
    let r = inspect_bytes(
        &c,
        Some("application/json"),
        Some("compress"),
        b"x",
        DATE,
        false,
    );
    assert_eq!(r.unwrap_err(), Unreadable::UnknownEncoding);
}

#[test]
fn json_record_size_limit_and_envelopes() {
    let c = cfg().with_max_record_bytes(64);
    let big = format!(r#"[{{"user_id":1,"pad":"{}"}}]"#, "x".repeat(100));
    let r = chunked(&c, "application/json", None, big.as_bytes(), &[7]);
    assert!(matches!(r, Err(Unreadable::RecordTooLarge { .. })), "{r:?}");
    // An envelope larger than the limit is fine as long as its records are small.
    let mut env = String::from(r#"{"data":["#);
    for i in 0..20 {
        env.push_str(&format!(r#"{{"user_id":{i}}},"#));
    }
    env.push_str(r#""13800138000"],"meta":"x"}"#);
    for sizes in [&[1usize][..], &[10], &[1000]] {
        let recs = chunked(&c, "application/json", None, env.as_bytes(), sizes).unwrap();
        assert_eq!(ids(&recs).len(), 21);
    }
    // A subject field in an envelope already larger than the limit: the envelope is a record
    // over the limit.
    let mut env2 = String::from(r#"{"data":["#);
    env2.push_str(&"1,".repeat(60));
    env2.push_str(r#"1],"user_id":5}"#);
    let r = chunked(&c, "application/json", None, env2.as_bytes(), &[16]);
    assert!(matches!(r, Err(Unreadable::RecordTooLarge { .. })), "{r:?}");
}

#[test]
fn release_offsets_for_plain_json() {
    let c = cfg();
    let body = br#"[{"user_id":1},{"user_id":2}]"#;
    let mut s = Scanner::new(Arc::new(c), Some("application/json"), None, DATE, false);
    s.feed(&body[..20]).unwrap();
    let recs = s.take_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].release, 14);
    assert_eq!(recs[0].decoded_span, 1..14);
    assert_eq!(s.release_offset(), 15, "up to the start of the open record");
    // A body without PI is releasable as it streams.
    let mut s = Scanner::new(Arc::new(cfg()), Some("application/json"), None, DATE, false);
    s.feed(br#"[1,2,3,"#).unwrap();
    assert_eq!(s.release_offset(), 7);
}

#[test]
fn ndjson_lines_and_json_seq() {
    let body = b"{\"user_id\":1}\n{\"note\":\"13800138000\"}\r\n\n\x1e{\"uid\":3}\n";
    let recs = all_chunkings("application/x-ndjson", body).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(ids(&recs).len(), 3);
    let r = inspect_bytes(
        &cfg(),
        Some("application/jsonl"),
        None,
        b"{\"a\":1}\n{",
        DATE,
        false,
    );
    assert!(matches!(r, Err(Unreadable::Truncated { .. })));
}

#[test]
fn csv_table() {
    let body = b"\xef\xbb\xbfname,User_ID,diagnosis,note\r\n\"Li, Lei\",1,flu,\"multi\r\nline 13800138000\"\r\nWang,2,,\"say \"\"hi\"\"\"\r\n,,,13900139000\n\nx,3,,";
    let recs = all_chunkings("text/csv; charset=utf-8", body).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].subjects[0].id, b"1");
    assert!(recs[0].subjects[0].sensitive);
    assert!(recs[0].subjects[0].categories.contains(Category::Contact));
    assert_eq!(recs[1].subjects[0].id, b"2");
    assert!(!recs[1].subjects[0].sensitive);
    assert_eq!(recs[2].subjects[0].namespace, Namespace::CnMobile);
    assert_eq!(recs[3].subjects[0].id, b"3");
    let r = inspect_bytes(&cfg(), Some("text/csv"), None, b"a\n\"open", DATE, false);
    assert!(matches!(r, Err(Unreadable::Truncated { .. })));
    let r = inspect_bytes(&cfg(), Some("text/csv"), None, b"a\n\xff\n", DATE, false);
    assert!(matches!(r, Err(Unreadable::InvalidUtf8 { .. })));
}

#[test]
fn form_table() {
    let recs = all_chunkings(
        "application/x-www-form-urlencoded",
        b"name=Li+Lei&UID=%37&diagnosis=flu&tel=13800138000",
    )
    .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].subjects.len(), 1);
    assert_eq!(recs[0].subjects[0].id, b"7");
    assert!(recs[0].subjects[0].sensitive);
    let recs = all_chunkings(
        "application/x-www-form-urlencoded",
        b"a=13800138000&b=x%40y.cn",
    )
    .unwrap();
    assert_eq!(recs[0].subjects.len(), 2);
}

fn multipart_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"preamble\r\n--XyZ\r\n");
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"uid\"\r\n\r\n42\r\n--XyZ\r\n");
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"note\"\r\n\r\n- XyZ is not the end 13800138000\r\n--XyZ\r\n");
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"f\"; filename=\"a.json\"\r\nContent-Type: application/json\r\n\r\n[{\"user_id\":9},{\"user_id\":10}]\r\n--XyZ\r\n");
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"g\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nuid,x\r\n11,y\r\n\r\n--XyZ--\r\nepilogue");
    b
}

#[test]
fn multipart_table() {
    let body = multipart_body();
    let recs = all_chunkings("multipart/form-data; boundary=\"XyZ\"", &body).unwrap();
    let got = ids(&recs);
    assert_eq!(
        got,
        [
            (Namespace::Field, "10".to_owned()),
            (Namespace::Field, "11".to_owned()),
            (Namespace::Field, "42".to_owned()),
            (Namespace::Field, "9".to_owned())
        ]
    );
    // The form record (uid 42) comes last and holds the phone's category.
    let last = recs.last().unwrap();
    assert_eq!(last.subjects[0].id, b"42");
    assert!(last.subjects[0].categories.contains(Category::Contact));
    // JSON part records are at body offsets: each object's span in the multipart body.
    for (id, object) in [
        (&b"9"[..], &br#"{"user_id":9}"#[..]),
        (b"10", br#"{"user_id":10}"#),
    ] {
        let at = body
            .windows(object.len())
            .position(|w| w == object)
            .expect("the object is in the body") as u64;
        let rec = recs
            .iter()
            .find(|r| r.subjects.iter().any(|s| s.id == id))
            .expect("a record for the subject");
        assert_eq!(
            rec.decoded_span,
            at..at + object.len() as u64,
            "user_id {}",
            String::from_utf8_lossy(id)
        );
    }
    let r = inspect_bytes(
        &cfg(),
        Some("multipart/form-data; boundary=XyZ"),
        None,
        &body[..body.len() - 20],
        DATE,
        false,
    );
    assert!(matches!(r, Err(Unreadable::BadMultipart { .. })), "{r:?}");
    let png = b"--b\r\nContent-Disposition: form-data; name=\"p\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--b--";
    let r = inspect_bytes(
        &cfg(),
        Some("multipart/form-data; boundary=b"),
        None,
        png,
        DATE,
        false,
    );
    assert_eq!(r.unwrap_err(), Unreadable::UnknownContentType);
}

pub(super) fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "raw-deflate" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        _ => unreachable!(),
    }
}

pub(super) fn ndjson_sample(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "{{\"user_id\":{i},\"name\":\"user {i}\",\"phone\":\"138{:08}\",\"diagnosis\":\"{}\"}}\n",
            i * 7 % 100_000_000,
            if i % 3 == 0 { "flu" } else { "" }
        ));
    }
    s.into_bytes()
}

#[test]
fn encodings_decode_and_release_conservatively() {
    let plain = ndjson_sample(3000);
    let want = chunked(&cfg(), "application/x-ndjson", None, &plain, &[4096]).unwrap();
    for coding in ["gzip", "deflate", "raw-deflate", "br", "zstd"] {
        let enc = encode(coding, &plain);
        let hdr = if coding == "raw-deflate" {
            "deflate"
        } else {
            coding
        };
        for sizes in [&[1usize, 700][..], &[65536]] {
            let got = chunked(&cfg(), "application/x-ndjson", Some(hdr), &enc, sizes).unwrap();
            assert_eq!(subjects_of(&got), subjects_of(&want), "{coding}");
        }
        // Truncated compressed stream.
        let r = chunked(
            &cfg(),
            "application/x-ndjson",
            Some(hdr),
            &enc[..enc.len() - 3],
            &[512],
        );
        assert!(r.is_err(), "{coding}");
    }
    // Two gzip members.
    let mut two = encode("gzip", b"{\"user_id\":1}\n");
    two.extend(encode("gzip", b"{\"user_id\":2}\n"));
    let f = inspect_bytes(
        &cfg(),
        Some("application/x-ndjson"),
        Some("gzip"),
        &two,
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(f.subject_count(), 2);
}

#[test]
fn compressed_release_never_reveals_unjudged_bytes() {
    // Release offsets of a compressed body: decoding the released prefix must never yield a
    // byte past the end of the records judged so far.
    let plain = ndjson_sample(20000);
    for coding in ["gzip", "br", "zstd"] {
        let enc = encode(coding, &plain);
        let mut s = Scanner::new(
            Arc::new(cfg()),
            Some("application/x-ndjson"),
            Some(coding),
            DATE,
            false,
        );
        let mut checked = 0;
        for (k, chunk) in enc.chunks(4096).enumerate() {
            s.feed(chunk).unwrap();
            let judged_end = s.records().iter().last().map(|r| r.decoded_span().end);
            let rel = s.release_offset() as usize;
            s.clear_records();
            if k % 8 != 0 || rel == 0 {
                continue;
            }
            let revealed = decode_prefix(coding, &enc[..rel]);
            if let Some(end) = judged_end {
                assert!(revealed as u64 <= end + 1, "{coding}: {revealed} > {end}");
            }
            checked += 1;
        }
        // Block codings hold back 256 KiB of encoded bytes; gzip only 64 KiB.
        if enc.len() > 300_000 || coding == "gzip" {
            assert!(checked > 0, "{coding}: something was released");
        }
        s.finish().unwrap();
    }
}

/// How many bytes a decoder yields from a prefix of a compressed stream.
fn decode_prefix(coding: &str, prefix: &[u8]) -> usize {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = match coding {
        "gzip" => flate2::read::GzDecoder::new(prefix).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(prefix, 4096).read_to_end(&mut out),
        _ => match zstd::stream::read::Decoder::new(prefix) {
            Ok(mut d) => d.read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    out.len()
}

#[test]
fn bombs_are_refused() {
    let zeros = vec![b' '; 50 << 20];
    let enc = encode("gzip", &zeros);
    let r = inspect_bytes(
        &cfg(),
        Some("application/json"),
        Some("gzip"),
        &enc,
        DATE,
        false,
    );
    assert_eq!(r.unwrap_err(), Unreadable::Bomb);
    let c = cfg().with_decode_limits(DecodeLimits {
        max_decoded_bytes: 1000,
        max_ratio: 1000,
        ratio_grace_bytes: 1 << 20,
    });
    let enc = encode("zstd", &vec![b' '; 5000]);
    let r = inspect_bytes(
        &c,
        Some("application/json"),
        Some("zstd"),
        &enc,
        DATE,
        false,
    );
    assert_eq!(r.unwrap_err(), Unreadable::Bomb);
}

#[test]
fn held_bytes_stay_bounded_on_large_bodies() {
    // 8 MB in one envelope object of small records: the release offset trails the bytes fed by
    // at most max_record_bytes plus one chunk, whatever the body size.
    let c = cfg().with_max_record_bytes(64 * 1024);
    let mut s = Scanner::new(&c, Some("application/json"), None, DATE, false);
    let chunk = 16 * 1024;
    let mut fed = 0u64;
    let mut max_held = 0u64;
    s.feed(b"{\"meta\":\"13800138000\",\"rows\":[").unwrap();
    let row = br#"{"user_id":12345,"name":"Li Lei","note":"x"},"#;
    let block: Vec<u8> = row
        .iter()
        .copied()
        .cycle()
        .take(chunk * row.len())
        .collect();
    for piece in block.chunks(chunk).cycle().take(8 << 20 >> 14) {
        s.feed(piece).unwrap();
        fed = s.bytes_fed();
        s.clear_records();
        max_held = max_held.max(fed - s.release_offset());
    }
    assert!(fed > 8_000_000);
    assert!(max_held <= 64 * 1024 + chunk as u64, "held {max_held}");
}

#[test]
fn csv_rows_of_separators_are_bounded() {
    let c = cfg().with_max_record_bytes(1000);
    let mut body = b"a,b\n".to_vec();
    body.extend(std::iter::repeat_n(b',', 5000));
    let r = chunked(&c, "text/csv", None, &body, &[64]);
    assert!(matches!(r, Err(Unreadable::RecordTooLarge { .. })), "{r:?}");
}

#[test]
fn empty_chunks_change_nothing() {
    let c = cfg();
    let plain = ndjson_sample(50);
    for coding in [
        None,
        Some("gzip"),
        Some("deflate"),
        Some("br"),
        Some("zstd"),
    ] {
        let body = coding.map_or_else(|| plain.clone(), |c| encode(c, &plain));
        let want = chunked(&cfg(), "application/x-ndjson", coding, &body, &[97]).unwrap();
        let mut s = Scanner::new(&c, Some("application/x-ndjson"), coding, DATE, false);
        let mut got = Vec::new();
        s.feed(&[]).unwrap();
        for piece in body.chunks(97) {
            s.feed(piece).unwrap();
            s.feed(&[]).unwrap();
            got.extend(s.take_records());
        }
        s.finish().unwrap();
        got.extend(s.take_records());
        assert_eq!(subjects_of(&got), subjects_of(&want), "{coding:?}");
    }
    // An empty body of an unreadable type is fine; a non-empty one is not.
    let mut s = Scanner::new(&c, Some("image/png"), None, DATE, false);
    s.feed(&[]).unwrap();
    s.finish().unwrap();
    let mut s = Scanner::new(&c, None, None, DATE, false);
    assert_eq!(s.feed(b"x"), Err(Unreadable::UnknownContentType));
    assert_eq!(s.feed(b"x"), Err(Unreadable::Closed));
}

#[test]
fn brotli_windows_over_the_bound_are_unreadable_before_decoding() {
    use crate::inspect::decode::brotli_window_bits;
    use std::io::Write;
    // RFC 7932 §9.1: the first bits of the stream name the window.
    assert_eq!(brotli_window_bits(0x00), 16);
    assert_eq!(brotli_window_bits(0x0B), 22);
    assert_eq!(brotli_window_bits(0x0F), 24);
    assert_eq!(brotli_window_bits(0x01), 17);
    assert_eq!(brotli_window_bits(0x21), 10);
    assert_eq!(brotli_window_bits(0x11), 30);
    let body = br#"{"user_id": 7, "note": "a window of sixteen MiB"}"#;
    let encode_with = |lgwin: u32| {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, lgwin);
            w.write_all(body).unwrap();
        }
        out
    };
    let big = encode_with(24);
    assert_eq!(brotli_window_bits(big[0]), 24);
    let r = inspect_bytes(
        &cfg(),
        Some("application/json"),
        Some("br"),
        &big,
        DATE,
        false,
    );
    assert_eq!(r.unwrap_err(), Unreadable::WindowTooLarge);
    // The common default (22) and anything smaller decode.
    for lgwin in [16, 20, 22] {
        let enc = encode_with(lgwin);
        let f = inspect_bytes(
            &cfg(),
            Some("application/json"),
            Some("br"),
            &enc,
            DATE,
            false,
        )
        .unwrap();
        assert_eq!(f.subject_count(), 1, "lgwin {lgwin}");
    }
}

/// The hit arena of the JSON scanner is bounded by the open envelopes, not by the body: the
/// identifiers an envelope's decision drained go when the envelope closes. Envelopes (objects
/// without a subject field, over `max_record_bytes`) one after another, at the top (NDJSON) and
/// inside one outer envelope (a JSON array in an object); every identifier is still found.
#[test]
fn json_hit_bytes_are_bounded_by_the_open_envelopes() {
    const MAX: usize = 256;
    const CHUNK: usize = 64;
    let cfg = cfg().with_max_record_bytes(MAX);
    let phone = |n: usize| format!("1380{n:07}");
    let envelope = |e: usize| {
        let fields: Vec<String> = (0..40)
            .map(|k| format!("\"p{k}\":\"{}\"", phone(e * 40 + k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let ndjson: String = (0..200).map(|e| envelope(e) + "\n").collect();
    let nested = format!(
        "{{\"items\":[{}]}}",
        (0..200).map(envelope).collect::<Vec<_>>().join(",")
    );
    for (seq, body) in [(true, ndjson), (false, nested)] {
        let mut s = super::super::json::JsonScanner::new(seq);
        let mut out = Records::default();
        let mut watched = Vec::new();
        let mut sink = Sink {
            cfg: &cfg,
            det: detect::DetectCtx {
                detectors: cfg.detectors(),
                transfer_date: DATE,
                resident_id_sensitive: cfg.resident_id_sensitive(),
            },
            out: &mut out,
            watched: &mut watched,
        };
        let mut held = 0;
        for c in body.as_bytes().chunks(CHUNK) {
            s.feed(c, &mut sink).unwrap();
            held = held.max(s.held_hit_bytes());
        }
        s.finish(&mut sink).unwrap();
        // One envelope's worth (the outer one holds none of its own).
        assert!(
            held <= MAX + CHUNK,
            "seq {seq}: the hit arena held {held} bytes (bound {})",
            MAX + CHUNK
        );
        let found: std::collections::BTreeSet<Vec<u8>> = out
            .iter()
            .flat_map(|r| r.subjects().map(|x| x.id.to_vec()))
            .collect();
        let want: std::collections::BTreeSet<Vec<u8>> =
            (0..200 * 40).map(|n| phone(n).into_bytes()).collect();
        assert_eq!(found, want, "seq {seq}: every identifier is found");
    }
}

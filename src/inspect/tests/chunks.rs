//! Chunk boundaries of the two-stage JSON scanner (stage 1 indexes 64-byte blocks and
//! carries escape and in-string state between windows): the same body split anywhere — inside
//! a backslash run of odd or even length across a block boundary, inside `\uXXXX` or a
//! surrogate pair, inside a string many blocks long, a number or a literal — gives the same
//! records, or the same error, as the body fed whole; and the unescaped text is what the
//! detectors see.

use proptest::prelude::*;

use super::reference::{engine, reference, with_outside};
use super::*;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id"],
        &Detector::ALL,
        &[("diagnosis", Category::Health)],
    )
}

/// The body fed whole, then cut once at every position, then fed byte by byte: the same
/// outcome each time. Returns the whole-body outcome.
fn same_at_every_cut(c: &InspectConfig, ct: &str, body: &[u8]) -> Result<Vec<Record>, Unreadable> {
    let whole = chunked(c, ct, None, body, &[body.len().max(1)]);
    for cut in 1..body.len() {
        let parts = chunked(c, ct, None, body, &[cut, body.len()]);
        assert_eq!(
            whole,
            parts,
            "cut at {cut} of {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let bytes = chunked(c, ct, None, body, &[1]);
    assert_eq!(
        whole,
        bytes,
        "byte by byte: {:?}",
        String::from_utf8_lossy(body)
    );
    whole
}

fn ids(r: &Result<Vec<Record>, Unreadable>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = r
        .as_ref()
        .map(|recs| {
            recs.iter()
                .flat_map(|r| r.subjects.iter().map(|s| s.id.clone()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn backslash_runs_of_every_length_across_block_boundaries() {
    let c = cfg();
    for n in 0..10 {
        for pad in 52..70 {
            // `n` backslashes, then (for odd `n`) the quote they escape: the string goes on.
            let mut s = String::from("{\"note\":\"");
            s.push_str(&"x".repeat(pad));
            s.push_str(&"\\".repeat(n));
            if n % 2 == 1 {
                s.push('"');
            }
            s.push_str(" 13800138000\",\"n\":7}");
            let r = same_at_every_cut(&c, "application/json", s.as_bytes());
            assert_eq!(ids(&r), [b"13800138000".to_vec()], "{s}");
        }
    }
}

#[test]
fn unicode_escapes_and_surrogate_pairs_split_anywhere() {
    let c = cfg();
    for pad in 55..66 {
        // The phone number written with `\u` escapes only, after an emoji as a surrogate pair.
        let phone: String = "13900139000"
            .chars()
            .map(|d| format!("\\u{:04x}", d as u32))
            .collect();
        let s = format!(
            "[{}{{\"note\":\"\\ud83d\\ude00 {phone}\",\"k\\u0031\":\"\\u4e2d\\/\\b\"}}]",
            " ".repeat(pad)
        );
        let r = same_at_every_cut(&c, "application/json", s.as_bytes());
        assert_eq!(ids(&r), [b"13900139000".to_vec()], "{s}");
    }
}

#[test]
fn strings_many_blocks_long() {
    let c = cfg();
    let mut s = String::from("{\"id\":\"u1\",\"note\":\"");
    for i in 0..40 {
        s.push_str(&format!("line {i} \\\"quoted\\\" \\\\ 中文 "));
    }
    s.push_str("call 13800138000 or mail A@B.cn");
    s.push_str(&" z".repeat(100));
    s.push_str("\",\"diagnosis\":\"flu\"}");
    let r = same_at_every_cut(&c, "application/json", s.as_bytes());
    assert_eq!(ids(&r), [b"13800138000".to_vec(), b"a@b.cn".to_vec()]);
}

#[test]
fn numbers_literals_and_sequences_split_anywhere() {
    let c = cfg();
    let bodies: [(&str, &str); 6] = [
        (
            "application/json",
            r#"[true,false,null,-1.5e3,13800138000, 0 ,{"user_id":12345678901}]"#,
        ),
        ("application/json", "  13800138000  "),
        (
            "application/x-ndjson",
            "{\"user_id\":1}\n2\n\"13800138000\"\ntrue\r\n[null]\n",
        ),
        (
            "application/json-seq",
            "\u{1e}{\"user_id\":3}\n\u{1e}13800138000\n",
        ),
        // Values glued together at the top of a sequence.
        ("application/x-ndjson", "1true\"13800138000\"null[2]{}"),
        ("application/json", "\u{feff}{\"user_id\":\"\\u0039\"}"),
    ];
    for (ct, b) in bodies {
        let r = same_at_every_cut(&c, ct, b.as_bytes());
        assert!(r.is_ok(), "{b}: {r:?}");
    }
}

#[test]
fn malformed_bodies_fail_the_same_wherever_cut() {
    let c = cfg();
    let bad: [&[u8]; 14] = [
        br#"{"a":"\x"}"#,
        br#"{"a":"\ud800"}"#,
        br#"{"a":"\ud800\u0041"}"#,
        br#"{"a":"\udc00"}"#,
        br#"{"a":"\u12"}"#,
        br#"{"a":"\u12G4"}"#,
        br#"{"a":"x\"#,
        br#"{"a":truex}"#,
        br#"{"a":1x}"#,
        br#"{"a":nul}"#,
        br#"[1 2]"#,
        br#"{"a" 1}"#,
        b"{\"a\":\"\xff\"}",
        br#"{"a":"ok"} x"#,
    ];
    for b in bad {
        let r = same_at_every_cut(&c, "application/json", b);
        assert!(r.is_err(), "{}", String::from_utf8_lossy(b));
    }
}

#[test]
fn bodies_larger_than_a_window() {
    let c = cfg();
    let mut s = String::from("[");
    for i in 0..3000 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"user_id\":{i},\"note\":\"a\\\\b\\\"c {} \\u4e2d\"}}",
            13_800_138_000u64 + i
        ));
    }
    s.push(']');
    assert!(s.len() > 2 * 64 * 1024);
    let b = s.as_bytes();
    let whole = chunked(&c, "application/json", None, b, &[b.len()]).unwrap();
    assert_eq!(whole.len(), 3000);
    for sizes in [&[65536 + 3][..], &[1000, 7], &[64], &[63, 65]] {
        let parts = chunked(&c, "application/json", None, b, sizes).unwrap();
        assert_eq!(whole, parts, "{sizes:?}");
    }
}

/// Strings heavy with backslashes, quotes and non-ASCII text, long enough to span blocks.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a\\\\\"\u{4e2d} ]{0,150}",
        "[\\\\]{0,9}\"?[0-9 ]{0,14}",
        Just("13800138000".to_owned()),
        Just("x\\\"13900139000\\\\".to_owned()),
    ]
}

fn nasty_doc() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        nasty().prop_map(Value::String),
        (0u64..20).prop_map(Value::from),
        Just(Value::from(13_900_139_000u64)),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![Just("user_id".to_owned()), nasty()], inner),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crate::testing::proptest_cases(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nasty_strings_split_at_random_positions(v in nasty_doc(), sizes in prop::collection::vec(1usize..200, 1..5), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let c = cfg();
        let whole = chunked(&c, "application/json", None, &body, &[body.len().max(1)]).unwrap();
        let parts = chunked(&c, "application/json", None, &body, &sizes).unwrap();
        prop_assert_eq!(&whole, &parts);
        let outside = inspect_bytes(&c, Some("application/json"), None, &body, DATE, false).unwrap().outside();
        prop_assert_eq!(with_outside(engine(&whole), outside), reference(&c, &body));
    }

    #[test]
    fn mutated_bodies_fail_the_same_wherever_split(v in nasty_doc(), flips in prop::collection::vec((any::<usize>(), prop_oneof![Just(b'"'), Just(b'\\'), Just(b'u'), Just(b'}'), Just(b' '), any::<u8>()]), 1..4), sizes in prop::collection::vec(1usize..100, 1..4)) {
        let mut body = serde_json::to_vec(&v).unwrap();
        let n = body.len();
        for (at, b) in flips {
            body[at % n] = b;
        }
        let c = cfg();
        let whole = chunked(&c, "application/json", None, &body, &[body.len()]);
        let parts = chunked(&c, "application/json", None, &body, &sizes);
        prop_assert_eq!(whole.is_ok(), parts.is_ok());
        // The NUL check runs per chunk before the scanner: with a NUL and another error, the
        // whole body reports the NUL, a split one whichever comes first.
        if whole.is_ok() || !body.contains(&0) {
            prop_assert_eq!(whole, parts);
        }
    }
}

/// XML: markup, references, CDATA, comments, multi-byte characters and a byte order mark cut
/// anywhere give the same records (or the same error) as the body fed whole.
#[test]
fn xml_split_anywhere() {
    let c = cfg();
    let bodies: [&[u8]; 7] = [
        "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:E xmlns:s=\"urn:s\"><s:B><r a=\"&#49;3800138000\"><user_id>u&amp;1</user_id>\
         <n><![CDATA[13900139000]]></n></r><!-- 13700137000 --><?pi 13600136000?></s:B></s:E>"
            .as_bytes(),
        "<a><r><user_id>张三</user_id><diagnosis>流感</diagnosis></r><t>&#x31;&#x33;800138000</t></a>".as_bytes(),
        b"<a><t>138<![CDATA[0013]]>8000</t></a>",
        "<a>\u{feff}13800138000</a>".as_bytes(),
        b"<a><b>&nbsp;</b></a>",
        b"<a><b></a>",
        b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let r = same_at_every_cut(&c, "text/xml", body);
        assert_eq!(r.is_ok(), i < 4, "{r:?}");
    }
    let ok = same_at_every_cut(&c, "text/xml", bodies[0]);
    assert_eq!(
        ids(&ok),
        [
            b"13600136000".to_vec(),
            b"13700137000".to_vec(),
            b"u&1".to_vec()
        ]
    );
    // GB18030 declared: cut inside a two- or four-byte character.
    let gb = encoding_rs::GB18030
        .encode("<?xml version=\"1.0\" encoding=\"GB18030\"?><a><user_id>张三😀</user_id></a>")
        .0
        .into_owned();
    let r = same_at_every_cut(&c, "text/xml", &gb);
    assert_eq!(ids(&r), ["张三😀".as_bytes().to_vec()]);
}

//! Unit tests of the detectors.

use super::*;

fn ctx(d: &[Detector]) -> DetectCtx {
    DetectCtx {
        detectors: d.iter().copied().collect(),
        transfer_date: time::macros::date!(2026 - 11 - 25),
        resident_id_sensitive: true,
    }
}

fn hits(text: &str, d: &[Detector]) -> Vec<(Namespace, String)> {
    let mut v = Vec::new();
    scan(text.as_bytes(), &ctx(d), &mut |ns, id, _| {
        v.push((ns, String::from_utf8_lossy(id).into_owned()))
    });
    v
}

#[test]
fn published_resident_ids_are_valid() {
    assert!(resident_id_valid(b"11010519491231002X"));
    assert!(resident_id_valid(b"440524188001010014"));
    assert!(!resident_id_valid(b"110105194912310021"));
    assert_eq!(
        hits("id 11010519491231002x.", &[Detector::CnResidentId]),
        [(Namespace::CnResidentId, "11010519491231002X".to_owned())]
    );
    // Invalid birth date (Feb 30) with a correct check character is not an ID.
    let d17 = "11010519490230002";
    let id = crate::inspect::tests::with_check(d17);
    assert!(hits(&id, &[Detector::CnResidentId]).is_empty());
    // Inside a longer digit run: no.
    assert!(hits("911010519491231002X", &[Detector::CnResidentId]).is_empty());
}

#[test]
fn mobile_numbers() {
    let m = [Detector::CnMobile];
    let one = |s: &str| hits(s, &m);
    let p = |s: &str| vec![(Namespace::CnMobile, s.to_owned())];
    assert_eq!(one("13800138000"), p("13800138000"));
    assert_eq!(one("+86 138 0013 8000"), p("13800138000"));
    assert_eq!(one("0086-13800138000"), p("13800138000"));
    assert_eq!(one("86-138-0013-8000"), p("13800138000"));
    assert_eq!(one("tel:13800138000;"), p("13800138000"));
    assert!(one("12800138000").is_empty());
    assert!(one("138001380001").is_empty());
    assert!(one("113800138000").is_empty());
    assert!(one("1380013800").is_empty());
    assert_eq!(one("a 13800138000 13900139000 b").len(), 2);
}

#[test]
fn emails_and_cards() {
    assert_eq!(
        hits("<Zhang.San+x@Mail.Example.CN>", &[Detector::Email]),
        [(Namespace::Email, "zhang.san+x@mail.example.cn".to_owned())]
    );
    assert!(hits("a@b", &[Detector::Email]).is_empty());
    assert!(hits("@example.com", &[Detector::Email]).is_empty());
    assert!(hits("x@y.c1", &[Detector::Email]).is_empty());
    assert_eq!(
        hits("card 6222-0212-3456-7890-128 end", &[Detector::BankCard]).len(),
        usize::from(super::bank_card::check(b"6222021234567890128"))
    );
    assert_eq!(
        hits("4111 1111 1111 1111", &[Detector::BankCard]),
        [(Namespace::BankCard, "4111111111111111".to_owned())]
    );
    assert!(hits("4111111111111112", &[Detector::BankCard]).is_empty());
}

#[test]
fn digits_as_people_write_them() {
    let all = &Detector::ALL;
    let p = |s: &str| (Namespace::CnMobile, s.to_owned());
    let id = |s: &str| (Namespace::CnResidentId, s.to_owned());
    let card = |s: &str| (Namespace::BankCard, s.to_owned());
    let cases: Vec<(&str, Vec<(Namespace, String)>)> = vec![
        ("138  0013  8000", vec![p("13800138000")]),
        ("138.0013.8000", vec![p("13800138000")]),
        ("138/0013/8000", vec![p("13800138000")]),
        ("138 - 0013 - 8000", vec![p("13800138000")]),
        ("(138) 0013 8000", vec![p("13800138000")]),
        ("(138)0013-8000", vec![p("13800138000")]),
        ("(+86) 138 0013 8000", vec![p("13800138000")]),
        ("+86 (138) 0013 8000", vec![p("13800138000")]),
        ("138-00138000", vec![p("13800138000")]),
        ("１３８００１３８０００", vec![p("13800138000")]),
        ("１３８　００１３　８０００", vec![p("13800138000")]),
        ("１３８－００１３－８０００", vec![p("13800138000")]),
        ("\u{3000}13800138000\u{3000}", vec![p("13800138000")]),
        (
            "138 0013 8000 和 139 0013 9000",
            vec![p("13800138000"), p("13900139000")],
        ),
        (
            "138 0013 8000 139 0013 9000",
            vec![p("13800138000"), p("13900139000")],
        ),
        (
            "13800138000,13900139000",
            vec![p("13800138000"), p("13900139000")],
        ),
        ("110105 19491231 002X", vec![id("11010519491231002X")]),
        ("110105-1949-1231-002x", vec![id("11010519491231002X")]),
        (
            "１１０１０５１９４９１２３１００２Ｘ",
            vec![id("11010519491231002X")],
        ),
        ("4111  1111  1111  1111", vec![card("4111111111111111")]),
        ("4111.1111.1111.1111", vec![card("4111111111111111")]),
        (
            "４１１１ １１１１ １１１１ １１１１",
            vec![card("4111111111111111")],
        ),
        // Not identifiers: longer runs, other groupings, timestamps, order numbers, UUIDs.
        ("1732700000000", vec![]),
        ("1732700000000123", vec![]),
        ("12345678901234567890", vec![]),
        ("138001380001", vec![]),
        ("Chrome/131.0.6778.139 Safari/537.36", vec![]),
        ("550e8400-e29b-41d4-a716-446655440000", vec![]),
        ("1380 013 8000", vec![]),
        ("13 800 138 000", vec![]),
        ("4111 1111 1111 1111 1111", vec![]),
        ("2024-11-27 13:80:01", vec![]),
    ];
    for (text, want) in cases {
        let mut got = hits(text, all);
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn long_chains_are_matched_in_windows() {
    // Forty short groups, then two phones: the window slides without losing them.
    let mut s = "12 ".repeat(40);
    s.push_str("138 0013 8000 139 0013 9000");
    assert_eq!(hits(&s, &[Detector::CnMobile]).len(), 2);
    let mut s = "1234 ".repeat(30);
    s.push_str("x 4111 1111 1111 1111");
    assert_eq!(hits(&s, &[Detector::BankCard]).len(), 1);
}

#[test]
fn the_digit_prefilter_rules_out_what_holds_no_identifier_shape() {
    for text in [
        "O-2026123456-1",
        "2026-03-01T08:00:00+08:00",
        "1234567890",
        "12345678901234567890",
        "1234 5678",
        "12 34 56 78 90 12",
        "１２３４５６７８９０",
    ] {
        assert!(!digits::may_match(text.as_bytes()), "{text:?}");
    }
    for text in [
        "13800138000",
        "138 0013 8000",
        "110105 19491231 002X",
        "4111 1111 1111 1111",
        "x１３８００１３８０００",
        "12345678901",
        "12345678901234567",
    ] {
        assert!(digits::may_match(text.as_bytes()), "{text:?}");
    }
}

/// Pieces the random texts of the prefilter's property test are made of: digit runs and
/// identifier groups, ASCII and full-width; every separator the digit pass knows, and
/// parentheses, `+` and `X` around groups; letters, `@` and non-ASCII text; truncated
/// full-width digits (a lone `0xEF`, `0xEF 0xBC`).
fn digit_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let fixed: Vec<&'static [u8]> = vec![
        b"13800138000",
        b"138",
        b"0013",
        b"8000",
        b"86",
        b"0086",
        b"4111",
        b"1111",
        b"111",
        b"110105",
        b"19491231",
        b"1949",
        b"1231",
        b"002",
        b"002X",
        b"11010519491231002",
        b"11010519491231002X",
        b"4111111111111111",
        b"6222021234567890128",
        b"138 0013 8000",
        b"(86) 138-0013-8000",
        b"0086 138 00138000",
        "１３８－００１３－８０００".as_bytes(),
        b"110105 19491231 002X",
        b"110105-1949-1231-002x",
        b"4111 1111 1111 1111",
        b"4111.1111.1111.111",
        b"6222 0212 3456 7890 128",
        " ".as_bytes(),
        b"-",
        b".",
        b"/",
        b"\t",
        "\u{a0}".as_bytes(),
        "\u{3000}".as_bytes(),
        "\u{2010}".as_bytes(),
        "\u{2015}".as_bytes(),
        "\u{ff0d}".as_bytes(),
        "\u{ff0e}".as_bytes(),
        "\u{ff0f}".as_bytes(),
        b"(",
        b")",
        "\u{ff08}".as_bytes(),
        "\u{ff09}".as_bytes(),
        b"+",
        "\u{ff0b}".as_bytes(),
        b"X",
        b"x",
        "\u{ff38}".as_bytes(),
        "\u{ff58}".as_bytes(),
        b"a",
        b"O",
        b"@",
        "\u{4e2d}".as_bytes(),
        "\u{e9}".as_bytes(),
        b"\xef",
        b"\xef\xbc",
        b"\xef\xbc\x8f",
    ];
    prop_oneof![
        3 => prop::sample::select(fixed).prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec((0u8..10, any::<bool>()), 1..21).prop_map(|ds| {
            let mut out = Vec::new();
            for (d, wide) in ds {
                if wide {
                    out.extend_from_slice(&[0xEF, 0xBC, 0x90 + d]);
                } else {
                    out.push(b'0' + d);
                }
            }
            out
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The digit pass finds the same identifiers, in the same order, with the prefilter as
    /// without it, for every set of digit detectors.
    #[test]
    fn the_digit_prefilter_changes_no_hit(
        pieces in proptest::collection::vec(digit_piece(), 0..12),
    ) {
        let text = pieces.concat();
        let all = [Detector::CnResidentId, Detector::CnMobile, Detector::BankCard];
        for set in 1u8..8 {
            let d: Vec<Detector> = (0..3).filter(|k| set >> k & 1 == 1).map(|k| all[k]).collect();
            let c = ctx(&d);
            let mut with = Vec::new();
            digits::scan(&text, &c, &mut |ns, id, cats| with.push((ns, id.to_vec(), cats)));
            let mut without = Vec::new();
            digits::scan_all(&text, &c, &mut |ns, id, cats| without.push((ns, id.to_vec(), cats)));
            proptest::prop_assert_eq!(with, without, "{:?}", String::from_utf8_lossy(&text));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The digit-mask prefilter of ASCII texts measures the atoms as the byte-by-byte one
    /// does (lengths around the 8-byte words and the 64-byte limit).
    #[test]
    fn the_mask_prefilter_equals_the_byte_prefilter(
        text in proptest::collection::vec(
            proptest::sample::select(b"0123456789012345678901234567890123456789 -./aX@".to_vec()),
            0..80,
        ),
    ) {
        proptest::prop_assert_eq!(
            digits::may_match(&text),
            digits::may_match_bytes(&text),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
    }
}

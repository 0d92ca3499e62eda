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

//! Unit tests of the inspection engine: SPEC §11 examples, per-format tricky cases, property
//! tests (chunking invariance, agreement with a `serde_json::Value` reference, arbitrary bytes).

mod bodies;
mod chunks;
mod differential;
mod embedded;
mod formats;
mod positions;
mod props;
mod protobuf;
mod reference;
mod xlsx;
mod xml;

use std::sync::Arc;

use super::*;
use crate::model::Category;

pub(super) const DATE: time::Date = time::macros::date!(2026 - 11 - 25);

/// The SPEC §11 configuration.
pub(super) fn spec_cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id"],
        &[Detector::CnResidentId, Detector::CnMobile],
        &[("diagnosis", Category::Health)],
    )
}

pub(super) fn json(cfg: &InspectConfig, body: &str) -> Findings {
    inspect_bytes(
        cfg,
        Some("application/json"),
        None,
        body.as_bytes(),
        DATE,
        false,
    )
    .unwrap()
}

/// Feeds `body` in the given chunk sizes (cycled) and returns the owned records.
pub(super) fn chunked(
    cfg: &InspectConfig,
    ctype: &str,
    enc: Option<&str>,
    body: &[u8],
    sizes: &[usize],
) -> Result<Vec<Record>, Unreadable> {
    let mut s = Scanner::new(Arc::new(cfg.clone()), Some(ctype), enc, DATE, false);
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    let mut last_release = 0;
    while i < body.len() {
        let n = sizes[k % sizes.len()].max(1).min(body.len() - i);
        s.feed(&body[i..i + n])?;
        i += n;
        k += 1;
        for r in s.records().iter() {
            assert!(r.release() >= last_release, "release offsets are monotonic");
            assert!(r.release() <= i as u64);
            last_release = r.release();
        }
        let rel = s.release_offset();
        assert!(rel >= last_release && rel <= i as u64);
        last_release = rel;
        out.extend(s.take_records());
    }
    s.finish()?;
    out.extend(s.take_records());
    assert_eq!(s.release_offset(), body.len() as u64);
    Ok(out)
}

/// Records without offsets (for comparing chunkings of encoded bodies).
pub(super) fn subjects_of(records: &[Record]) -> Vec<Vec<Subject>> {
    records.iter().map(|r| r.subjects.clone()).collect()
}

#[test]
fn spec_example_1_numbers_and_strings_are_one_identifier() {
    let f = json(
        &spec_cfg(),
        r#"[{"user_id":1,"diagnosis":"x"},{"user_id":"1"},{"user_id":2}]"#,
    );
    assert_eq!(f.subject_count(), 2);
    assert_eq!(f.sensitive_count(), 1);
}

#[test]
fn spec_example_2_hits_inside_a_record_belong_to_it() {
    let f = json(
        &spec_cfg(),
        r#"{"batch":[{"user_id":7,"phone":"138 0013 8000"}],"contact":"+86 139-0013-9000"}"#,
    );
    assert_eq!(f.subject_count(), 2);
    assert_eq!(f.sensitive_count(), 0);
    let subs = f.subjects();
    assert_eq!(subs[0].namespace, Namespace::Field);
    assert_eq!(subs[0].id, b"7");
    assert!(subs[0].categories.contains(Category::Contact));
    assert_eq!(subs[1].namespace, Namespace::CnMobile);
    assert_eq!(subs[1].id, b"13900139000");
}

#[test]
fn spec_example_3_resident_id_without_subject_field() {
    let f = json(&spec_cfg(), r#"{"name":"x","id_no":"11010519491231002X"}"#);
    assert_eq!(f.subject_count(), 1);
    assert_eq!(f.sensitive_count(), 1);
    let s = &f.subjects()[0];
    assert_eq!(s.namespace, Namespace::CnResidentId);
    assert!(s.categories.contains(Category::Identity));
    let f = json(&spec_cfg(), r#"{"name":"x","id_no":"110105194912310021"}"#);
    assert_eq!(f.subject_count(), 0);
}

#[test]
fn resident_id_sensitivity_can_be_turned_off() {
    let cfg = spec_cfg().with_resident_id_sensitive(false);
    let f = json(&cfg, r#"{"id_no":"11010519491231002x"}"#);
    assert_eq!(f.subject_count(), 1);
    assert_eq!(f.sensitive_count(), 0);
    assert_eq!(f.subjects()[0].id, b"11010519491231002X");
}

#[test]
fn minors_under_14_are_sensitive_even_without_identity_sensitivity() {
    // Born 2015-06-01: 11 on the transfer date.
    let id = with_check("11010520150601001");
    let cfg = spec_cfg().with_resident_id_sensitive(false);
    let f = json(&cfg, &format!(r#"{{"user_id":5,"kid":"{id}"}}"#));
    let s = &f.subjects()[0];
    assert!(s.categories.contains(Category::Minors));
    assert!(s.sensitive);
    // Born 2012-11-25: 14 exactly on the transfer date, no longer a minor under 14.
    let id = with_check("11010520121125001");
    let f = json(&cfg, &format!(r#"{{"kid":"{id}"}}"#));
    assert!(!f.subjects()[0].categories.contains(Category::Minors));
    let id = with_check("11010520121126001");
    let f = json(&cfg, &format!(r#"{{"kid":"{id}"}}"#));
    assert!(f.subjects()[0].categories.contains(Category::Minors));
}

/// Appends the MOD 11-2 check character to 17 digits.
pub(super) fn with_check(d17: &str) -> String {
    for c in "0123456789X".chars() {
        let id = format!("{d17}{c}");
        if detect::resident_id_valid(id.as_bytes()) {
            return id;
        }
    }
    unreachable!()
}

#[test]
fn destination_sensitive_makes_everything_sensitive() {
    let f = inspect_bytes(
        &spec_cfg(),
        Some("application/json"),
        None,
        br#"[{"user_id":1},{"user_id":2}]"#,
        DATE,
        true,
    )
    .unwrap();
    assert_eq!(f.sensitive_count(), 2);
}

#[test]
fn every_subject_field_of_a_record_is_a_subject() {
    // A person seen under two identifiers counts twice: over-counting is safe (SPEC §3).
    let cfg = InspectConfig::for_tests(&["user_id", "uid"], &[], &[]);
    let f = json(&cfg, r#"{"uid":"a","user_id":"b","nested":{"x":1}}"#);
    assert_eq!(f.records.len(), 1);
    let ids: Vec<Vec<u8>> = f.subjects().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, [b"a".to_vec(), b"b".to_vec()]);
    let f = json(&cfg, r#"{"UID":" a "}"#);
    assert_eq!(f.subjects()[0].id, b"a");
}

#[test]
fn records_nested_in_records_and_categories_in_sub_objects() {
    let cfg = spec_cfg();
    let f = json(
        &cfg,
        r#"{"user_id":1,"medical":{"diagnosis":"flu"},"orders":[{"user_id":2,"phone":"13800138000"}]}"#,
    );
    let subs = f.subjects();
    assert_eq!(subs.len(), 2);
    assert!(subs[0].sensitive, "user 1 has a diagnosis in a sub-object");
    assert!(!subs[1].sensitive);
    assert!(subs[1].categories.contains(Category::Contact));
}

#[test]
fn category_fields_without_identifier_make_no_subject_but_mark_hits() {
    let cfg = spec_cfg();
    assert_eq!(json(&cfg, r#"{"diagnosis":"flu"}"#).subject_count(), 0);
    let f = json(&cfg, r#"{"diagnosis":"flu","phone":"13800138000"}"#);
    assert_eq!(f.sensitive_count(), 1);
}

#[test]
fn watched_fields_are_reported() {
    let cfg = spec_cfg()
        .with_watched_fields(&["survey_coordinates", "absent"])
        .unwrap();
    let f = json(&cfg, r#"{"a":{"Survey_Coordinates":[1,2]}}"#);
    assert_eq!(f.watched_seen, ["survey_coordinates"]);
}

#[test]
fn query_and_headers() {
    let cfg = InspectConfig::default();
    let f = inspect_query(&cfg, "uid=42&phone=%2B86%20138-0013-8000&x=1", DATE, false);
    assert_eq!(f.subject_count(), 1);
    assert!(f.subjects()[0].categories.contains(Category::Contact));
    let f = inspect_query(&cfg, "a=13800138000&b=13900139000", DATE, false);
    assert_eq!(f.subject_count(), 2);
    let mut h = http::HeaderMap::new();
    h.insert("x-user-id", http::HeaderValue::from_static(" 42 "));
    let f = inspect_headers(&cfg, &h, DATE, false);
    assert_eq!(f.subjects()[0].id, b"42");
    assert_eq!(f.subjects()[0].namespace, Namespace::Field);
}

#[test]
fn debug_output_never_shows_identifiers() {
    let f = json(&spec_cfg(), r#"{"user_id":"secret-4711"}"#);
    let dbg = format!("{:?} {:?}", f.subjects(), f.records);
    assert!(!dbg.contains("secret-4711"));
    let mut s = Scanner::new(
        Arc::new(spec_cfg()),
        Some("application/json"),
        None,
        DATE,
        false,
    );
    s.feed(br#"{"user_id":"secret-4711"}"#).unwrap();
    let dbg = format!("{:?}", s.records().iter().collect::<Vec<_>>());
    assert!(!dbg.contains("secret-4711"));
    let dbg = format!("{s:?} {:?} {f:?}", s.records());
    assert!(!dbg.contains("secret-4711"), "{dbg}");
    // Mid-token state (scratch buffers) is not shown either.
    let mut s = Scanner::new(
        Arc::new(spec_cfg()),
        Some("application/json"),
        None,
        DATE,
        false,
    );
    s.feed(br#"{"user_id":"secret-47"#).unwrap();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("secret-47"), "{dbg}");
    // Errors carry offsets, never values.
    let e = inspect_bytes(
        &spec_cfg(),
        Some("application/json"),
        None,
        b"{\"a\":\"secret-4711\"x}",
        DATE,
        false,
    )
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("secret"));
}

#[test]
fn configured_names_match_across_spellings() {
    let cfg = InspectConfig::for_tests(
        &["user_id"],
        &[Detector::CnMobile],
        &[("medical_record", Category::Health)],
    )
    .with_watched_fields(&["survey_coordinates"])
    .unwrap()
    .with_headers(&["x-user-id"]);
    // Every spelling of the subject field names the same subject field.
    for key in [
        "user_id", "userId", "UserID", "user-id", "USER ID", "user.id", "USERID",
    ] {
        let f = json(&cfg, &format!(r#"{{"{key}":"u-1","medicalRecord":"x"}}"#));
        assert_eq!(f.subject_count(), 1, "{key}");
        let s = &f.subjects()[0];
        assert_eq!(
            (s.namespace, s.id.as_slice()),
            (Namespace::Field, &b"u-1"[..]),
            "{key}"
        );
        assert!(s.categories.contains(Category::Health), "{key}");
    }
    // Forms, queries, CSV headers, subject headers and watched names too.
    let form = inspect_bytes(
        &cfg,
        Some("application/x-www-form-urlencoded"),
        None,
        b"userId=7&Medical-Record=y",
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(form.subjects()[0].id, b"7");
    assert!(form.subjects()[0].categories.contains(Category::Health));
    let q = inspect_query(&cfg, "UserId=8", DATE, false);
    assert_eq!(q.subjects()[0].id, b"8");
    let csv = inspect_bytes(
        &cfg,
        Some("text/csv"),
        None,
        b"User ID,x\n9,1\n",
        DATE,
        false,
    )
    .unwrap();
    assert_eq!(csv.subjects()[0].id, b"9");
    let mut h = http::HeaderMap::new();
    h.insert("x-userid", http::HeaderValue::from_static("10"));
    let f = inspect_headers(&cfg, &h, DATE, false);
    assert_eq!(f.subjects()[0].id, b"10");
    let f = json(&cfg, r#"{"surveyCoordinates":[1,2]}"#);
    assert_eq!(f.watched_seen, ["survey_coordinates"]);
    // Other names stay other names: letters are not dropped, only separators.
    for key in ["user_ids", "users_id", "user__idx", "use_rid_", "uid"] {
        let f = json(&cfg, &format!(r#"{{"{key}":"u-1"}}"#));
        let same = key.replace('_', "").eq_ignore_ascii_case("userid");
        assert_eq!(f.subject_count(), usize::from(same), "{key}");
    }
    // A name of separators only is no name.
    let no: [&str; 0] = [];
    let e = InspectConfig::new(
        &["__"],
        DetectorSet::ALL,
        &no,
        &[],
        Limits {
            max_depth: 8,
            max_record_bytes: 1024,
            decode: DecodeLimits::default(),
        },
        true,
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::BadFieldName { .. }), "{e:?}");
}

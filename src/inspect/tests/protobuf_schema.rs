//! Protobuf and gRPC bodies with descriptor sets (the fixture `tests/data/partner.binpb`):
//! field names act like JSON keys; and the differential test against `prost-reflect`'s
//! decoder (every string it decodes reached the detectors, with a schema and without).

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use prost_reflect::prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use super::super::detect::trace;
use super::protobuf::{customer, frame, ld, vi};
use super::*;

const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";

fn schemas() -> ProtobufSchemas {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/partner.binpb");
    ProtobufSchemas::load(&[p]).unwrap()
}

fn cfg(with_schema: bool) -> InspectConfig {
    InspectConfig::for_tests(
        &["member_id", "user_id"],
        &[Detector::CnResidentId, Detector::CnMobile, Detector::Email],
        &[
            ("diagnosis", Category::Health),
            ("city", Category::Location),
        ],
    )
    .with_protobuf_schemas(with_schema.then(schemas))
}

fn customer_desc() -> MessageDescriptor {
    schemas().message("partner.v1.Customer").unwrap()
}

fn pb(c: &InspectConfig, ctype: &str, body: &[u8]) -> Result<Findings, Unreadable> {
    inspect_bytes(c, Some(ctype), None, body, DATE, false)
}

/// The fixture's customer with a member id and a diagnosis.
fn member() -> Vec<u8> {
    let mut m = customer("张三", MOBILE, ID, "北京");
    m.extend(vi(6, 42));
    m.extend(ld(7, "flu".as_bytes()));
    m
}

const MEMBER_JSON: &str = r#"{"name":"张三","phone":"13812345678","id_number":"11010519491231002X","address":{"city":"北京"},"member_id":42,"diagnosis":"flu"}"#;

#[test]
fn field_names_act_like_json_keys() {
    let c = cfg(true);
    let f = pb(
        &c,
        "application/x-protobuf; proto=partner.v1.Customer",
        &member(),
    )
    .unwrap();
    let j = json(&c, MEMBER_JSON);
    assert_eq!(f.subjects(), j.subjects());
    assert_eq!(f.subject_count(), 1);
    let s = &f.subjects()[0];
    assert_eq!(
        (s.namespace, s.id.as_slice()),
        (Namespace::Field, &b"42"[..])
    );
    assert!(s.categories.contains(Category::Health));
    assert!(s.categories.contains(Category::Location));
    // Without the schema (or with a type the pool does not know) there are no names: the
    // detector hits are the subjects.
    for (c, t) in [
        (
            cfg(false),
            "application/x-protobuf; proto=partner.v1.Customer",
        ),
        (cfg(true), "application/x-protobuf; proto=partner.v1.Nobody"),
        (cfg(true), "application/x-protobuf"),
    ] {
        let f = pb(&c, t, &member()).unwrap();
        assert_eq!(f.subject_count(), 2, "{t}");
        assert!(f.subjects().iter().all(|s| s.namespace != Namespace::Field));
    }
}

#[test]
fn the_grpc_path_names_the_message_type() {
    let c = Arc::new(cfg(true));
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        "application/grpc".parse().unwrap(),
    );
    let mut body = frame(false, &member());
    body.extend(frame(false, &member()));
    for (path, named) in [
        (Some("/partner.v1.CustomerService/UploadMany"), true),
        (Some("/partner.v1.CustomerService/Upload"), true),
        (Some("/partner.v1.CustomerService/Nothing"), false),
        (Some("/partner.v1.Nobody/Upload"), false),
        (None, false),
    ] {
        let mut s = Scanner::for_request(c.clone(), &h, path, DATE, false);
        s.feed(&body).unwrap();
        s.finish().unwrap();
        let recs = s.take_records();
        assert_eq!(recs.len(), 2, "{path:?}");
        let fields = recs[0]
            .subjects
            .iter()
            .filter(|s| s.namespace == Namespace::Field)
            .count();
        assert_eq!(fields, usize::from(named), "{path:?}");
    }
}

#[test]
fn nested_messages_held_by_subject_fields_and_watched_names() {
    // A message held by a subject field: its scalars are subject values (a subject container).
    let c = InspectConfig::for_tests(&["address"], &[Detector::CnMobile], &[])
        .with_protobuf_schemas(Some(schemas()))
        .with_watched_fields(&["id_number"])
        .unwrap();
    let m = customer("张三", MOBILE, ID, "北京");
    let t = "application/x-protobuf; messageType=partner.v1.Customer";
    let f = pb(&c, t, &m).unwrap();
    let j = json(
        &c,
        &format!(
            r#"{{"name":"张三","phone":"{MOBILE}","id_number":"{ID}","address":{{"city":"北京"}}}}"#
        ),
    );
    assert_eq!(f.subjects(), j.subjects());
    assert_eq!(f.watched_seen, vec!["id_number".to_owned()]);
    // A field of message type that does not parse is malformed; nesting is bounded.
    let bad = ld(4, &[0x0A, 0x09, b'x']);
    assert!(matches!(
        pb(&c, t, &bad).unwrap_err(),
        Unreadable::Malformed { .. }
    ));
}

#[test]
fn typed_numbers_are_read_as_their_type() {
    let c = cfg(true);
    let t = "application/x-protobuf; proto=partner.v1.Customer";
    // member_id = 13812345678 (uint64): a subject field value and a mobile number.
    let f = pb(&c, t, &vi(6, 13_812_345_678)).unwrap();
    assert_eq!(f.records.len(), 1);
    assert_eq!(f.records[0].subjects[0].id, MOBILE.as_bytes());
    // Unknown fields of a typed message are read without a schema.
    let mut m = vi(6, 7);
    m.extend(ld(99, format!("call {MOBILE}").as_bytes()));
    let f = pb(&c, t, &m).unwrap();
    assert_eq!(f.subject_count(), 1);
    // A declared string field sent as a varint is read as an unknown one would be.
    let f = pb(&c, t, &vi(2, 13_812_345_678)).unwrap();
    assert_eq!(f.subject_count(), 1);
}

#[test]
fn descriptor_set_files_that_cannot_be_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.binpb");
    let e = ProtobufSchemas::load(&[missing]).unwrap_err();
    assert_eq!(e.index, 0);
    assert!(e.reason.contains("cannot read"), "{e}");
    let corrupt = dir.path().join("corrupt.binpb");
    std::fs::write(&corrupt, b"\x0a\xff\x01not a descriptor").unwrap();
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/partner.binpb");
    let e = ProtobufSchemas::load(&[good, corrupt]).unwrap_err();
    assert_eq!(e.index, 1);
    assert!(e.reason.contains("FileDescriptorSet"), "{e}");
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        "[\u{4e00}-\u{4e20}]{0,6}",
        Just(MOBILE.to_owned()),
        Just(ID.to_owned()),
        "1[3-9][0-9]{9}",
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
        any::<String>(),
    ]
}

prop_compose! {
    fn random_customer()(
        name in text(), phone in text(), id in text(), city in prop::option::of(text()),
        street in text(), email in text(), member in any::<u64>(), notes in prop::collection::vec(text(), 0..4),
    ) -> Vec<u8> {
        let d = customer_desc();
        let mut m = DynamicMessage::new(d.clone());
        m.set_field_by_name("name", Value::String(name));
        m.set_field_by_name("phone", Value::String(phone));
        m.set_field_by_name("id_number", Value::String(id));
        m.set_field_by_name("email", Value::String(email));
        m.set_field_by_name("member_id", Value::U64(member));
        m.set_field_by_name("notes", Value::List(notes.into_iter().map(Value::String).collect()));
        if let Some(city) = city {
            let ad = d.get_field_by_name("address").unwrap();
            let prost_reflect::Kind::Message(a) = ad.kind() else { unreachable!() };
            let mut addr = DynamicMessage::new(a);
            addr.set_field_by_name("city", Value::String(city));
            addr.set_field_by_name("street", Value::String(street));
            m.set_field_by_name("address", Value::Message(addr));
        }
        m.encode_to_vec()
    }
}

/// Every string in a decoded message (nested ones included).
fn strings(m: &DynamicMessage, out: &mut Vec<String>) {
    fn value(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Message(m) => strings(m, out),
            Value::List(l) => l.iter().for_each(|v| value(v, out)),
            _ => {}
        }
    }
    for (_, v) in m.fields() {
        value(v, out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Every string the reference decoder finds reached the detectors, with and without the
    /// schema, and the schema'd reading counts what the JSON of the same message counts.
    #[test]
    fn every_string_the_reference_decoder_sees_is_inspected(body in random_customer()) {
        let reference = DynamicMessage::decode(customer_desc(), body.as_slice()).unwrap();
        let mut want = Vec::new();
        strings(&reference, &mut want);
        for with_schema in [false, true] {
            let c = cfg(with_schema);
            trace::start();
            let r = pb(&c, "application/x-protobuf; proto=partner.v1.Customer", &body);
            let seen = trace::take();
            let f = r.unwrap();
            for w in want.iter().filter(|w| !w.is_empty()) {
                prop_assert!(
                    seen.iter().any(|s| s.windows(w.len()).any(|x| x == w.as_bytes())),
                    "schema {with_schema}: {w:?} never reached the detectors"
                );
            }
            if with_schema {
                // The same message as JSON (proto3 JSON mapping, uint64 as a number).
                let mut j = serde_json::Map::new();
                for (fd, v) in reference.fields() {
                    j.insert(fd.name().to_owned(), to_json(v));
                }
                let jf = json(&c, &serde_json::Value::Object(j).to_string());
                prop_assert_eq!(f.subjects(), jf.subjects());
            }
        }
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::U64(n) => serde_json::Value::from(*n),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Message(m) => {
            let mut o = serde_json::Map::new();
            for (fd, v) in m.fields() {
                o.insert(fd.name().to_owned(), to_json(v));
            }
            serde_json::Value::Object(o)
        }
        _ => serde_json::Value::Null,
    }
}

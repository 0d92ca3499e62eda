//! Protobuf and gRPC bodies through the real binary to a real loopback upstream: counted as
//! the same people in JSON are, with and without `inspection.protobuf_descriptor_sets` (the
//! fixture `tests/data/partner.binpb`), a category from a field name the schema gives, malformed
//! wire data refused with nothing forwarded, gRPC frames over HTTP/1.1 counted per message, and
//! `check` on a descriptor file that is missing.

use std::path::Path;

use crate::harness::approvals::{approval, eu, CATEGORIES};
use crate::harness::upstream::Upstream;
use crate::harness::{cli_on, GateBuilder, GateProc as Gate};

const MOBILE_A: &str = "13812345678";
const MOBILE_B: &str = "13987654321";

/// A base-128 varint.
pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
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
pub(crate) fn ld(n: u64, v: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    varint(n << 3 | 2, &mut o);
    varint(v.len() as u64, &mut o);
    o.extend_from_slice(v);
    o
}

/// `partner.v1.Customer { name = 1; phone = 2; diagnosis = 7 }`.
fn customer(name: &str, phone: &str, diagnosis: Option<&str>) -> Vec<u8> {
    let mut m = ld(1, name.as_bytes());
    m.extend(ld(2, phone.as_bytes()));
    if let Some(d) = diagnosis {
        m.extend(ld(7, d.as_bytes()));
    }
    m
}

/// A gRPC message frame (uncompressed).
pub(crate) fn frame(msg: &[u8]) -> Vec<u8> {
    let mut o = vec![0];
    o.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    o.extend_from_slice(msg);
    o
}

/// The path of the fixture `FileDescriptorSet` (`tests/data/partner.binpb`, the compiled
/// `tests/data/partner.proto`), for a config's `protobuf_descriptor_sets`.
pub(crate) fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/partner.binpb")
        .display()
        .to_string()
}

async fn gate(up: &Upstream, descriptors: bool) -> Gate {
    let mut b = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .section(CATEGORIES)
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\", \"contact\", \"health\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr));
    if descriptors {
        b = b.section(&format!(
            "[inspection]\nprotobuf_descriptor_sets = [\"{}\"]",
            fixture()
        ));
    }
    b.start().await
}

async fn post(gate: &Gate, url: &str, ctype: &str, body: &[u8]) -> reqwest::Response {
    gate.client()
        .post(url)
        .header("content-type", ctype)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn protobuf_without_a_schema_counts_the_people_json_counts() {
    let up = Upstream::http().await;
    let gate = gate(&up, false).await;
    let body = customer("张三", MOBILE_A, Some("flu"));
    let r = post(
        &gate,
        "http://api.eu.test/v1/customers",
        "application/x-protobuf",
        &body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().last().unwrap().body, body);
    // Without a schema there are no names: the mobile number is a person, no category.
    assert_eq!(gate.entity_counts().await, (1, 0));
    // The same person as JSON without the category field: nothing new.
    let r = gate
        .post_json(
            "http://api.eu.test/v1/json",
            format!(r#"{{"name":"张三","phone":"{MOBILE_A}"}}"#),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (1, 0));
    // Malformed wire data (a length past the end): 451 unreadable_body, nothing forwarded.
    let before = up.received().len();
    let mut bad = customer("李四", MOBILE_B, None);
    bad.extend([0x12, 0x7F, b'x']);
    let r = post(
        &gate,
        "http://api.eu.test/v1/customers",
        "application/x-protobuf",
        &bad,
    )
    .await;
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "unreadable_body");
    assert_eq!(up.received().len(), before);
    assert_eq!(gate.entity_counts().await, (1, 0));
}

#[tokio::test]
async fn with_descriptor_sets_field_names_give_categories_as_json_keys_do() {
    let up = Upstream::http().await;
    let gate = gate(&up, true).await;
    let body = customer("张三", MOBILE_A, Some("flu"));
    let r = post(
        &gate,
        "http://api.eu.test/v1/customers",
        "application/x-protobuf; proto=partner.v1.Customer",
        &body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().last().unwrap().body, body);
    // `diagnosis` is a health field by its name: the person is sensitive.
    assert_eq!(gate.entity_counts().await, (1, 1));
    // The same people as JSON: nothing new; a new one in JSON is counted the same way.
    let r = gate
        .post_json(
            "http://api.eu.test/v1/json",
            format!(r#"[{{"name":"张三","phone":"{MOBILE_A}","diagnosis":"flu"}},{{"phone":"{MOBILE_B}","diagnosis":"cold"}}]"#),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (2, 2));
}

#[tokio::test]
async fn grpc_frames_over_http1_are_counted_per_message() {
    let up = Upstream::http().await;
    let gate = gate(&up, true).await;
    let mut body = frame(&customer("张三", MOBILE_A, Some("flu")));
    body.extend(frame(&[]));
    body.extend(frame(&customer("李四", MOBILE_B, None)));
    let url = "http://api.eu.test/partner.v1.CustomerService/UploadMany";
    // The type is named by the media type here as well as by the path; the path's
    // resolution is tested in the engine's unit tests and by tests/it/grpc.rs.
    let ctype = "application/grpc; proto=partner.v1.Customer";
    let r = post(&gate, url, ctype, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().last().unwrap().body, body);
    // The message type gave `diagnosis` its category; neither message has a subject field,
    // so, as in a JSON array of the same objects, the category is outside every record and
    // applies to every person of the call (SPEC §3): both are sensitive.
    assert_eq!(gate.entity_counts().await, (2, 2));
    // A length prefix past the end of the body: unreadable, nothing forwarded.
    let before = up.received().len();
    let mut cut = frame(&customer("王五", "13700000000", None));
    cut[4] += 20;
    let r = post(&gate, url, ctype, &cut).await;
    // Answered in gRPC terms (SPEC §3): HTTP 200, trailers-only, status 7 and the reason.
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "7");
    assert_eq!(r.headers()["grpc-message"], "unreadable_body");
    assert_eq!(up.received().len(), before);
    assert_eq!(gate.entity_counts().await, (2, 2));
}

#[test]
fn check_reports_a_missing_descriptor_set() {
    let dir = tempfile::tempdir().unwrap();
    let gate = r#"
[gate]
proxy_listen = "127.0.0.1:13128"
admin_listen = "127.0.0.1:19464"

[entity]
name = "Co"
regime = "cac-2024"

[inspection]
protobuf_descriptor_sets = ["protos/missing.binpb"]
"#;
    std::fs::write(dir.path().join("gate.toml"), gate).unwrap();
    std::fs::write(dir.path().join("approvals.toml"), "").unwrap();
    let out = cli_on(dir.path().join("gate.toml"), &["check"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("inspection.protobuf_descriptor_sets[0]")
            && out.stdout.contains("missing.binpb")
            && out.stdout.contains("cannot read"),
        "{}",
        out.stdout
    );
    // The fixture itself loads.
    let ok = gate.replace("protos/missing.binpb", &fixture());
    std::fs::write(dir.path().join("gate.toml"), ok).unwrap();
    let out = cli_on(dir.path().join("gate.toml"), &["check"]);
    assert!(
        !out.stdout.contains("protobuf_descriptor_sets"),
        "{}",
        out.stdout
    );
}

//! XML and SOAP bodies through the real binary: counted exactly as JSON of the same people,
//! judged record by record while they stream, the declared encoding honoured, and the hostile
//! ones (billion laughs, XXE to a file and to a listener) refused with nothing forwarded and
//! nothing fetched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::approvals::{approval, eu, CATEGORIES};
use crate::harness::upstream::Upstream;
use crate::harness::{eventually, GateBuilder};

const URL: &str = "http://api.eu.test/v1/soap";

fn soap(rows: &[(u64, Option<&str>)]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:hr="urn:example:hr">
<soap:Header><hr:Auth>t</hr:Auth></soap:Header><soap:Body><hr:Sync>"#,
    );
    for (id, diagnosis) in rows {
        s.push_str(&format!("<hr:Employee><hr:user_id>{id}</hr:user_id>"));
        if let Some(d) = diagnosis {
            s.push_str(&format!("<hr:diagnosis><![CDATA[{d}]]></hr:diagnosis>"));
        }
        s.push_str("</hr:Employee>");
    }
    s.push_str("</hr:Sync></soap:Body></soap:Envelope>");
    s
}

#[tokio::test]
async fn a_soap_envelope_counts_the_same_people_as_json() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .section(CATEGORIES)
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\", \"contact\", \"health\"",
            "2099-12-31",
            "",
        ))
        .destination(eu(up.addr))
        .start()
        .await;
    let body = soap(&[(1, Some("flu")), (2, None), (3, None)]);
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "application/soap+xml; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (3, 1));
    assert_eq!(up.received().last().unwrap().body, body.as_bytes());
    // The same people in JSON are the same subjects: nothing new is counted.
    let r = gate
        .post_json(
            URL,
            r#"[{"user_id":1,"diagnosis":"flu"},{"user_id":"2"},{"user_id":3}]"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (3, 1));
    // GB18030 declared (the Content-Type names no charset): a new person, counted.
    let gb = encoding_rs::GB18030
        .encode(
            "<?xml version=\"1.0\" encoding=\"GB18030\"?><员工><记录><user_id>张三</user_id>\
             <电话>13800138000</电话></记录></员工>",
        )
        .0
        .into_owned();
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "text/xml")
        .body(gb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (4, 1));
    assert_eq!(up.received().last().unwrap().body, gb);
    // The declaration and the Content-Type disagree: unreadable, nothing forwarded.
    let before = up.received().len();
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "text/xml; charset=utf-8")
        .body(gb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "unreadable_body");
    assert_eq!(up.received().len(), before);
    assert_eq!(gate.entity_counts().await, (4, 1));
}

#[tokio::test]
async fn a_streamed_xml_batch_is_judged_record_by_record() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .section(CATEGORIES)
        .section("[inspection]\natomic_body_bytes = 16384\nmax_record_bytes = 16384")
        .destination(eu(up.addr))
        .start()
        .await;
    // 3,000 basic records (no approval needed), then one with health data (needs a contract
    // the company does not hold), then more.
    let mut rows: Vec<(u64, Option<&str>)> = (1..=3000).map(|i| (i, None)).collect();
    rows.push((777_777, Some("flu")));
    rows.extend((3001..=3100).map(|i| (i, None)));
    let body = soap(&rows);
    let refused_at = body.find("<hr:Employee><hr:user_id>777777").unwrap() as u64;
    let chunks: Vec<bytes::Bytes> = body
        .as_bytes()
        .chunks(4096)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "text/xml")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "approval_required");
    eventually(
        "the upstream recorded the broken body",
        Duration::from_secs(10),
        || async { (up.in_flight() == 0 && !up.received().is_empty()).then_some(()) },
    )
    .await;
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].complete, "the upstream must see a broken body");
    assert!(
        got[0].body_len <= refused_at,
        "bytes of the refused record reached the upstream"
    );
    let seen = String::from_utf8_lossy(&got[0].body);
    assert!(!seen.contains("777777") && !seen.contains("flu"));
    // Records were released as they were judged: most of the allowed ones went through, and
    // each person forwarded is counted.
    // (Bytes the gate released may still be in flight when it aborts the upstream body: a
    // margin, as in the NDJSON streaming tests.)
    assert!(
        got[0].body_len * 2 >= refused_at,
        "far fewer bytes forwarded ({}) than the allowed records ({refused_at})",
        got[0].body_len
    );
    let forwarded = seen.matches("</hr:Employee>").count() as u64;
    let (counted, sensitive) = gate.entity_counts().await;
    assert!(
        counted >= forwarded && forwarded > 1000,
        "{counted} {forwarded}"
    );
    assert_eq!(sensitive, 0);
}

/// A loopback TCP listener that counts the connections it accepts.
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billion_laughs_and_xxe_are_refused_and_nothing_is_fetched() {
    let up = Upstream::http().await;
    let (trap, connections) = counting_listener().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let secret = gate.dir().join("secret.txt");
    std::fs::write(&secret, "13800138000 secret-4711").unwrap();
    let file_url = format!("file://{}", secret.display());
    let bodies = [
        (
            "billion laughs",
            r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]><lolz>&lol4;</lolz>"#.to_owned(),
        ),
        (
            "XXE to a file",
            format!(r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{file_url}">]><r>&x;</r>"#),
        ),
        (
            "XXE to a listener",
            format!(r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://{trap}/x">]><r>&x;</r>"#),
        ),
        (
            "external DTD on a listener",
            format!(r#"<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://{trap}/x.dtd"><r/>"#),
        ),
        (
            "parameter entity to a listener",
            format!(r#"<!DOCTYPE r [<!ENTITY % p SYSTEM "http://{trap}/p">%p;]><r/>"#),
        ),
    ];
    for (what, body) in bodies {
        let r = gate
            .client()
            .post(URL)
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 451, "{what}");
        let text = r.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["reason"], "unreadable_body", "{what}");
        assert!(
            !text.contains("secret-4711") && !text.contains("lol"),
            "{what}: {text}"
        );
    }
    assert!(
        up.received().is_empty(),
        "an unreadable body reached the upstream"
    );
    // A request after them completes: had the gate fetched anything, it would have done so
    // while judging those bodies.
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "text/xml")
        .body("<!DOCTYPE r><r>ok</r>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the gate connected to the address a DTD named"
    );
    assert!(!gate.logs().contains("secret-4711"));
}

/// One REQMOD carrying a whole request with `body` (its preview is all of it).
fn reqmod(port: u16, ctype: &str, body: &str) -> Vec<u8> {
    let head = format!(
        "POST {URL} HTTP/1.1\r\nHost: api.eu.test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut m = format!(
        "REQMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nAllow: 204\r\nPreview: {}\r\nEncapsulated: req-hdr=0, req-body={}\r\n\r\n{head}{:x}\r\n",
        body.len(),
        head.len(),
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body.as_bytes());
    m.extend_from_slice(b"\r\n0; ieof\r\n\r\n");
    m
}

#[tokio::test]
async fn xml_is_read_on_the_icap_path_too() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .gate_key("icap_listen = \"127.0.0.1:0\"")
        .destination(eu(up.addr))
        .start()
        .await;
    let port = gate.icap.unwrap().port();
    let r = crate::icap::icap_raw(
        port,
        &reqmod(port, "text/xml", &soap(&[(41, None)])),
        "\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("ICAP/1.0 204"), "{r}");
    let series = "transfer_gate_entity_subjects{class=\"all\"}";
    let counted = crate::harness::poll_until(Duration::from_secs(10), || async {
        (gate.metric_opt(series).await == Some(1.0)).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the SOAP body's subject is counted");
    let laughs = r#"<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>"#;
    let r = crate::icap::icap_raw(port, &reqmod(port, "application/xml", laughs), "}").await;
    assert!(r.starts_with("ICAP/1.0 200"), "{r}");
    assert!(r.contains("451") && r.contains("unreadable_body"), "{r}");
    assert!(up.received().is_empty());
}

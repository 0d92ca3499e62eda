//! Body formats end to end through the real binary: every way a careless or hostile client got
//! an identifier past the gate by how it framed, labelled or encoded a body now gets 451 from a
//! destination with no approval, and nothing reaches the upstream; the same shapes without PI
//! still pass.

use crate::harness::upstream::Upstream;
use crate::harness::{Dest, GateBuilder};

const URL: &str = "http://api.eu.test/v1/ingest";
const PHONE: &str = "13800138000";

fn utf16le_bom(s: &str) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFE];
    for u in s.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v
}

fn multipart(preamble: &str, part_headers: &str, data: &[u8], epilogue: &str) -> Vec<u8> {
    let mut b = preamble.as_bytes().to_vec();
    b.extend_from_slice(b"--BB\r\nContent-Disposition: form-data; name=\"a\"\r\n");
    b.extend_from_slice(part_headers.as_bytes());
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n--BB--");
    b.extend_from_slice(epilogue.as_bytes());
    b
}

/// `(what, content types, body)`: each content type is sent as its own header field.
type Case = (&'static str, Vec<&'static str>, Vec<u8>);

fn with_pi() -> Vec<Case> {
    let mp = "multipart/form-data; boundary=BB";
    vec![
        ("one-line CSV", vec!["text/csv"], PHONE.into()),
        (
            "CSV header=absent",
            vec!["text/csv; header=absent"],
            format!("a,{PHONE}\r\n").into(),
        ),
        (
            "PI in the CSV header row",
            vec!["text/csv"],
            format!("{PHONE},x\r\n1,2\r\n").into(),
        ),
        (
            "multipart preamble",
            vec![mp],
            multipart(&format!("note {PHONE}\r\n"), "", b"x", ""),
        ),
        (
            "multipart epilogue",
            vec![mp],
            multipart("", "", b"x", &format!("\r\nnote {PHONE}")),
        ),
        (
            "JSON labelled multipart containing --BB--",
            vec![mp],
            format!(r#"{{"tel":"{PHONE}","x":"--BB--"}}"#).into(),
        ),
        (
            "boundary=AA; boundary=BB",
            vec!["multipart/form-data; boundary=AA; boundary=BB"],
            multipart("", "", PHONE.as_bytes(), "").replace_all(b"--BB", b"--AA"),
        ),
        (
            "quoted boundary containing ;",
            vec!["multipart/form-data; boundary=\"BB;x\""],
            multipart("", "", b"x", "").replace_all(b"--BB", b"--BB;x"),
        ),
        (
            "base64 part",
            vec![mp],
            multipart(
                "",
                "Content-Transfer-Encoding: base64\r\n",
                b"MTM4MDAx\r\nMzgwMDA=",
                "",
            ),
        ),
        (
            "quoted-printable part",
            vec![mp],
            multipart(
                "",
                "Content-Transfer-Encoding: quoted-printable\r\n",
                b"138=\r\n00138000",
                "",
            ),
        ),
        (
            "PI in a part's filename",
            vec![mp],
            multipart("", "", b"x", "").replace_all(
                b"name=\"a\"",
                format!("name=\"a\"; filename=\"{PHONE}.txt\"").as_bytes(),
            ),
        ),
        (
            "utf-16 CSV",
            vec!["text/csv; charset=utf-16"],
            utf16le_bom(&format!("a,tel\r\n1,{PHONE}\r\n")),
        ),
        (
            "utf-16 form",
            vec!["application/x-www-form-urlencoded; charset=utf-16"],
            utf16le_bom(&format!("tel={PHONE}")),
        ),
        (
            "utf-16 multipart text",
            vec![mp],
            multipart(
                "",
                "Content-Type: text/plain; charset=utf-16\r\n",
                &utf16le_bom(PHONE),
                "",
            ),
        ),
        (
            "UTF-16 CSV sent as UTF-8",
            vec!["text/csv"],
            utf16le_bom(&format!("a,{PHONE}"))[2..].to_vec(),
        ),
        (
            "GBK form",
            vec!["application/x-www-form-urlencoded; charset=gbk"],
            encoding_rs::GBK
                .encode(&format!("姓名=张三&tel={PHONE}"))
                .0
                .into_owned(),
        ),
        (
            "JSON labelled as a form",
            vec!["application/x-www-form-urlencoded"],
            format!(r#"{{"tel":"{PHONE}"}}"#).into(),
        ),
        (
            "two Content-Type headers",
            vec!["text/plain", "application/json"],
            format!(r#"{{"tel":"{PHONE}"}}"#).into(),
        ),
        (
            "an unknown charset",
            vec!["text/csv; charset=latin1"],
            format!("a\r\n{PHONE}").into(),
        ),
    ]
}

fn without_pi() -> Vec<Case> {
    let mp = "multipart/form-data; boundary=BB";
    vec![
        ("one-line CSV", vec!["text/csv"], "name,order".into()),
        (
            "CSV header=absent",
            vec!["text/csv; header=absent"],
            "a,b\r\n".into(),
        ),
        (
            "multipart with preamble and epilogue",
            vec![mp],
            multipart("preamble\r\n", "", b"x", "\r\nepilogue"),
        ),
        (
            "base64 part",
            vec![mp],
            multipart("", "Content-Transfer-Encoding: base64\r\n", b"aGVsbG8=", ""),
        ),
        (
            "utf-16 CSV",
            vec!["text/csv; charset=utf-16"],
            utf16le_bom("名字,数量\r\n苹果,20\r\n"),
        ),
        (
            "GB18030 CSV",
            vec!["text/csv; charset=GB18030"],
            encoding_rs::GB18030
                .encode("名字\r\n苹果\r\n")
                .0
                .into_owned(),
        ),
        (
            "JSON labelled as a form",
            vec!["application/x-www-form-urlencoded"],
            r#"{"page":2}"#.into(),
        ),
    ]
}

trait ReplaceAll {
    fn replace_all(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceAll for Vec<u8> {
    fn replace_all(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

#[tokio::test]
async fn body_formats_cannot_carry_pi_past_the_gate() {
    let up = Upstream::http().await;
    // A CIIO needs a security assessment for any PI: with no approval, any PI is refused.
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let client = gate.client();
    for (what, types, body) in with_pi() {
        let mut req = client.post(URL).body(body);
        for t in types {
            req = req.header("content-type", t);
        }
        let before = up.received().len();
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 451, "{what}: {text}");
        assert!(!text.contains(PHONE), "{what}: the refusal repeats the PI");
        assert_eq!(up.received().len(), before, "{what} reached the upstream");
    }
    for (what, types, body) in without_pi() {
        let mut req = client.post(URL).body(body.clone());
        for t in types {
            req = req.header("content-type", t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{what}: {text}");
        let got = up.received();
        let last = got.last().unwrap();
        assert_eq!(last.body, body, "{what}: the original bytes go upstream");
    }
    assert!(!up
        .received()
        .iter()
        .any(|r| r.body.windows(PHONE.len()).any(|w| w == PHONE.as_bytes())));
}

/// The two-stage JSON scanner indexes 64-byte blocks inside 16 KiB windows: an identifier
/// written with `\u` escapes, placed after backslash runs of odd and even length, as a key, or
/// straddling a window boundary of a large body, is still found through the binary. Each body
/// is refused for its PI (not as unreadable), and the same body without the identifier passes,
/// so it is valid JSON the gate reads.
#[tokio::test]
async fn json_pi_across_scanner_blocks_and_windows_is_found() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let client = gate.client();
    let escaped: String = PHONE
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let pad = |n: usize| "a".repeat(n);
    // `ID` is replaced by the identifier (PI) or by a word (the control).
    let bodies: Vec<(&str, String)> = vec![
        (
            "escaped identifier after odd and even backslash runs",
            format!(
                r#"{{"a":"{}\\\\\\\"","b":"\\\\","note":"call ID"}}"#,
                pad(61)
            ),
        ),
        (
            "identifier as a key",
            format!(r#"{{"{}":1,"ID":{{"x":1}}}}"#, pad(60)),
        ),
        (
            "identifier across a 16 KiB window boundary",
            format!(r#"{{"pad":"{}","note":"ID"}}"#, pad(16 * 1024 - 20)),
        ),
        (
            "NDJSON line after a long line",
            format!("{{\"pad\":\"{}\"}}\n{{\"note\":\"ID\"}}\n", pad(40_000)),
        ),
    ];
    for (what, body) in bodies {
        let ct = if what.starts_with("NDJSON") {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        for (id, expect_pi) in [(PHONE, true), (escaped.as_str(), true), ("nobody", false)] {
            let before = up.received().len();
            let r = client
                .post(URL)
                .header("content-type", ct)
                .body(body.replace("ID", id))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let reason = crate::harness::reason_of(&r);
            if expect_pi {
                assert_eq!(status, 451, "{what} ({id}): {reason}");
                assert_ne!(reason, "unreadable_body", "{what} ({id})");
                assert_eq!(
                    up.received().len(),
                    before,
                    "{what} ({id}) reached the upstream"
                );
            } else {
                assert_eq!(status, 200, "{what}: the control is refused: {reason}");
            }
        }
    }
}

//! Spreadsheets through the real binary (SPEC §3 "spreadsheets", §9): an xlsx upload — as the
//! body, as a multipart part named `customers.xlsx` sent as `application/octet-stream`, and
//! from `curl -F` — is counted exactly as the same people sent as JSON; a zip bomb, a zip slip
//! path, a truncated workbook and a renamed CSV get 451 `unreadable_body` with nothing
//! forwarded; a workbook over `inspection.max_workbook_bytes` gets 413, declared or chunked.

use std::io::{Cursor, Write};

use bytes::Bytes;
use rust_xlsxwriter::Workbook;
use zip::write::SimpleFileOptions;

use crate::harness::upstream::Upstream;
use crate::harness::{curl, reason_of, Dest, GateBuilder};

const URL: &str = "http://api.eu.test/v1/import";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// A workbook of `n` customers numbered from `from`: user ids as numbers, phones as number
/// cells, a diagnosis for every other one; a second sheet of staff with resident IDs.
fn workbook(from: u64, n: u64) -> Vec<u8> {
    let mut wb = Workbook::new();
    let s = wb.add_worksheet();
    s.write_string(0, 0, "user_id").unwrap();
    s.write_string(0, 1, "phone").unwrap();
    s.write_string(0, 2, "diagnosis").unwrap();
    for i in 0..n {
        let r = i as u32 + 1;
        s.write_number(r, 0, (from + i) as f64).unwrap();
        s.write_number(r, 1, (13_800_000_000 + from + i) as f64)
            .unwrap();
        if i % 2 == 0 {
            s.write_string(r, 2, "flu").unwrap();
        }
    }
    let t = wb.add_worksheet();
    t.write_string(0, 0, "name").unwrap();
    t.write_string(0, 1, "id_no").unwrap();
    t.write_string(1, 0, "Zhang").unwrap();
    t.write_string(1, 1, "11010519491231002X").unwrap();
    wb.save_to_buffer().unwrap()
}

/// The same people as [`workbook`], as JSON.
fn same_as_json(from: u64, n: u64) -> String {
    let mut rows: Vec<String> = (0..n)
        .map(|i| {
            let d = if i % 2 == 0 {
                r#","diagnosis":"flu""#
            } else {
                ""
            };
            format!(
                r#"{{"user_id":{},"phone":{}{d}}}"#,
                from + i,
                13_800_000_000 + from + i
            )
        })
        .collect();
    rows.push(r#"{"name":"Zhang","id_no":"11010519491231002X"}"#.to_owned());
    format!("[{}]", rows.join(","))
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn multipart_file(filename: &str, ctype: &str, data: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n--BB--\r\n");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xlsx_upload_is_counted_as_the_same_people_in_json() {
    let up = Upstream::http().await;
    // Observe mode: the sensitive ones would need an approval; counting is what is tested.
    let as_xlsx = GateBuilder::new()
        .gate_key("mode = \"observe\"")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section("[inspection.categories]\nhealth = [\"diagnosis\"]")
        .start()
        .await;
    let as_json = GateBuilder::new()
        .gate_key("mode = \"observe\"")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section("[inspection.categories]\nhealth = [\"diagnosis\"]")
        .start()
        .await;
    let book = workbook(1000, 20);
    let r = as_xlsx
        .client()
        .post(URL)
        .header("content-type", XLSX)
        .body(book.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        up.received().last().unwrap().body,
        book,
        "the workbook as sent"
    );
    let r = as_json.post_json(URL, same_as_json(1000, 20)).await;
    assert_eq!(r.status(), 200);
    let counts = as_xlsx.entity_counts().await;
    // 20 customers (their phones inside their records) and one member of staff; 10 customers
    // with a diagnosis and the resident ID are sensitive.
    assert_eq!(counts, (21, 11));
    assert_eq!(counts, as_json.entity_counts().await);

    // A multipart part named customers.xlsx, sent as application/octet-stream: new people.
    let body = multipart_file(
        "customers.xlsx",
        "application/octet-stream",
        &workbook(2000, 5),
    );
    let r = as_xlsx
        .client()
        .post(URL)
        .header("content-type", "multipart/form-data; boundary=BB")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(as_xlsx.entity_counts().await, (26, 14));

    // `curl -F file=@customers.xlsx` (curl picks the part's type from the name).
    let file = as_xlsx.dir().join("customers.xlsx");
    std::fs::write(&file, workbook(3000, 4)).unwrap();
    let (proxy, form) = (as_xlsx.proxy_url(), format!("file=@{}", file.display()));
    let (code, text) =
        tokio::task::spawn_blocking(move || curl(&["--proxy", &proxy, "-F", &form, URL]))
            .await
            .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(as_xlsx.entity_counts().await, (30, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_workbooks_get_451_and_nothing_is_forwarded() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section("[inspection]\nmax_decoded_bytes = 16777216")
        .start()
        .await;
    let book = workbook(1, 3);
    let mut big = b"<worksheet><sheetData><row><c t=\"inlineStr\"><is><t>".to_vec();
    big.resize(64 << 20, b'a');
    big.extend_from_slice(b"</t></is></c></row></sheetData></worksheet>");
    let rels = br#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#;
    let wbxml = br#"<workbook xmlns:r="r"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
    let bomb = zip_of(&[
        ("xl/workbook.xml", wbxml),
        ("xl/_rels/workbook.xml.rels", rels),
        ("xl/worksheets/sheet1.xml", &big),
    ]);
    let slip = zip_of(&[
        ("xl/workbook.xml", wbxml),
        ("xl/_rels/workbook.xml.rels", rels),
        ("xl/worksheets/sheet1.xml", b"<worksheet/>"),
        ("../../etc/cron.d/x", b"13800138000"),
    ]);
    let csv = b"user_id,phone\n1,13800138000\n".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("zip bomb", XLSX, bomb),
        ("zip slip", XLSX, slip),
        ("truncated", XLSX, book[..book.len() - 40].to_vec()),
        ("renamed CSV", XLSX, csv.clone()),
        (
            "renamed CSV as customers.xlsx",
            "multipart/form-data; boundary=BB",
            multipart_file("customers.xlsx", "application/octet-stream", &csv),
        ),
        ("CSV as octet-stream", "application/octet-stream", csv),
    ];
    for (what, ctype, body) in cases {
        let before = up.received().len();
        let r = gate
            .client()
            .post(URL)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 451, "{what}");
        assert_eq!(reason_of(&r), "unreadable_body", "{what}");
        assert_eq!(up.received().len(), before, "{what} reached the upstream");
    }
    assert_eq!(gate.entity_counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_over_max_workbook_bytes_gets_413_and_nothing_is_forwarded() {
    let up = Upstream::http().await;
    let book = workbook(1, 400);
    let limit = book.len() as u64 - 1;
    // Observe mode: 413 is no policy decision, observing does not let a workbook through.
    let gate = GateBuilder::new()
        .gate_key("mode = \"observe\"")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section(&format!("[inspection]\nmax_workbook_bytes = {limit}"))
        .start()
        .await;
    // Declared: refused before it is read.
    let r = gate
        .client()
        .post(URL)
        .header("content-type", XLSX)
        .body(book.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked: held until it passes the limit, then refused.
    let chunks: Vec<Result<Bytes, std::io::Error>> = book
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let r = gate
        .client()
        .post(URL)
        .header("content-type", XLSX)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "{}", r.text().await.unwrap());
    // As a multipart part, chunked or not.
    let body = multipart_file("customers.xlsx", "application/octet-stream", &book);
    let r = gate
        .client()
        .post(URL)
        .header("content-type", "multipart/form-data; boundary=BB")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The chunked one's head may have been sent: no byte of its body, never a clean end.
    assert!(
        up.received()
            .iter()
            .all(|r| r.body.is_empty() && !r.complete),
        "nothing of a workbook reached the upstream"
    );
    assert_eq!(gate.entity_counts().await, (0, 0));
    // A workbook at the limit is read.
    let small = workbook(1, 3);
    let r = gate
        .client()
        .post(URL)
        .header("content-type", XLSX)
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Three customers and the member of staff (the resident ID is sensitive).
    assert_eq!(gate.entity_counts().await, (4, 1));
}

/// The ICAP listener behind Squid takes the same path: a workbook is counted as on the proxy
/// listener, a zip slip is refused, one over `max_workbook_bytes` gets 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workbooks_through_squid_and_icap_are_judged_the_same() {
    let up = Upstream::http().await;
    let book = workbook(1000, 20);
    let approval = "[[approval]]\nid = \"SA-1\"\nmechanism = \"security_assessment\"\nstatus = \"active\"\ndestinations = [\"eu\"]\ncategories = [\"basic\", \"contact\", \"health\", \"identity\"]\nvalid_from = \"2024-01-01\"\nvalid_until = \"2099-12-31\"\n";
    let gate = GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .approvals(approval)
        .gate_key("icap_listen = \"127.0.0.1:0\"")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .section(&format!(
            "[inspection]\nmax_workbook_bytes = {}\n\n[inspection.categories]\nhealth = [\"diagnosis\"]",
            book.len() + 1
        ))
        .start()
        .await;
    let squid =
        crate::harness::squid::Squid::start(gate.icap.unwrap().port(), &["api.eu.test"]).await;
    let url = format!("http://api.eu.test:{}/v1/import", up.addr.port());
    let post = |ctype: &'static str, body: Vec<u8>| {
        squid
            .client()
            .post(&url)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let r = post(XLSX, book.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (21, 11));
    assert_eq!(up.received().last().unwrap().body, book);
    let forwarded = up.received().len();
    let rels = br#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#;
    let slip = zip_of(&[
        ("xl/workbook.xml", br#"<workbook xmlns:r="r"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#),
        ("xl/_rels/workbook.xml.rels", rels),
        ("xl/worksheets/sheet1.xml", b"<worksheet/>"),
        ("/etc/x", b"13800138000"),
    ]);
    let r = post("application/octet-stream", slip).await.unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(reason_of(&r), "unreadable_body");
    let r = post(XLSX, workbook(5000, 200)).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        up.received().len(),
        forwarded,
        "nothing more reached the upstream"
    );
    assert_eq!(gate.entity_counts().await, (21, 11));
}

//! xlsx bodies (SPEC §3 "spreadsheets"): workbooks made by a real writer (`rust_xlsxwriter`)
//! and by hand (inline strings, numbers in exponent notation), counted like CSV rows; the
//! hostile ones (zip bomb, zip slip, truncated, renamed CSV, `.xls`, macros, too many entries,
//! too large); recognition by type, sniffing and part file name; and a differential test
//! against `calamine`: every cell value it reads reached the gate's detectors.

use std::io::{Cursor, Write};

use proptest::prelude::*;
use rust_xlsxwriter::{Format as XFormat, Workbook as XWorkbook};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::super::detect::trace;
use super::super::xlsx::integral;
use super::*;

const XLSX: &str = XLSX_TYPE;

fn cfg() -> InspectConfig {
    InspectConfig::for_tests(
        &["user_id"],
        &[Detector::CnResidentId, Detector::CnMobile, Detector::Email],
        &[("diagnosis", Category::Health)],
    )
}

fn inspect(cfg: &InspectConfig, ctype: &str, body: &[u8]) -> Result<Findings, Unreadable> {
    inspect_bytes(cfg, Some(ctype), None, body, DATE, false)
}

/// `(namespace, identifier, sensitive)` of every subject.
fn ids(f: &Findings) -> Vec<(Namespace, String, bool)> {
    f.subjects()
        .into_iter()
        .map(|s| (s.namespace, String::from_utf8(s.id).unwrap(), s.sensitive))
        .collect()
}

fn sub(ns: Namespace, id: &str, sensitive: bool) -> (Namespace, String, bool) {
    (ns, id.to_owned(), sensitive)
}

/// A zip of `entries`, deflated.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const TYPES: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#;
const BOOK: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="People" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
const RELS: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#;

/// A hand-made workbook with one sheet of `rows` (the `<sheetData>` content).
fn hand_book(rows: &str) -> Vec<u8> {
    let sheet = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
    );
    zip_of(&[
        ("[Content_Types].xml", TYPES),
        ("xl/workbook.xml", BOOK),
        ("xl/_rels/workbook.xml.rels", RELS),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
    ])
}

/// Two sheets with different headers, an empty first row, numbers, shared and rich strings.
fn customers() -> Vec<u8> {
    let mut wb = XWorkbook::new();
    let s = wb.add_worksheet();
    s.set_name("Customers").unwrap();
    // Row 0 stays empty: the header is the first non-empty row.
    s.write_string(1, 0, "user_id").unwrap();
    s.write_string(1, 1, "phone").unwrap();
    s.write_string(1, 2, "diagnosis").unwrap();
    s.write_number(2, 0, 1001).unwrap();
    s.write_number(2, 1, 13_800_138_000_f64).unwrap();
    s.write_string(2, 2, "flu").unwrap();
    s.write_string(3, 0, "u-2").unwrap();
    s.write_string(3, 1, "139 0013 9000").unwrap();
    // A row without its subject field: the phone is a subject of its own.
    s.write_number(4, 1, 13_700_137_000_f64).unwrap();
    let red = XFormat::new().set_bold();
    let plain = XFormat::new();
    s.write_rich_string(5, 0, &[(&plain, "u-"), (&red, "3")])
        .unwrap();
    let t = wb.add_worksheet();
    t.set_name("Staff").unwrap();
    t.write_string(0, 0, "name").unwrap();
    t.write_string(0, 1, "id_no").unwrap();
    t.write_string(1, 0, "Zhang").unwrap();
    t.write_string(1, 1, "11010519491231002X").unwrap();
    t.write_string(2, 0, "Li").unwrap();
    t.write_string(2, 1, "li@example.com").unwrap();
    wb.save_to_buffer().unwrap()
}

#[test]
fn a_workbook_is_counted_like_csv_rows_sheet_by_sheet() {
    let f = inspect(&cfg(), XLSX, &customers()).unwrap();
    assert_eq!(
        ids(&f),
        vec![
            sub(Namespace::Field, "1001", true),
            sub(Namespace::Field, "u-2", false),
            sub(Namespace::Field, "u-3", false),
            sub(Namespace::CnResidentId, "11010519491231002X", true),
            sub(Namespace::CnMobile, "13700137000", false),
            sub(Namespace::Email, "li@example.com", false),
        ]
    );
    // One record per data row with a subject: 4 on the first sheet, 2 on the second.
    assert_eq!(f.records.len(), 6);
    let cats = f.subjects()[0].categories;
    assert!(cats.contains(Category::Health) && cats.contains(Category::Contact));
}

#[test]
fn the_same_people_as_json_are_the_same_subjects() {
    let json = r#"[{"user_id":1001,"phone":13800138000,"diagnosis":"flu"},
        {"user_id":"u-2","phone":"139 0013 9000"},{"phone":13700137000},{"user_id":"u-3"},
        {"name":"Zhang","id_no":"11010519491231002X"},{"name":"Li","id_no":"li@example.com"}]"#;
    let j = inspect(&cfg(), "application/json", json.as_bytes()).unwrap();
    let x = inspect(&cfg(), XLSX, &customers()).unwrap();
    assert_eq!(j.subjects(), x.subjects());
    assert_eq!(j.sensitive_count(), x.sensitive_count());
}

#[test]
fn inline_strings_exponent_numbers_formula_results_and_references_are_values() {
    let rows = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>user_id</t></is></c><c r="C1" t="inlineStr"><is><r><t>dia</t></r><r><t>gnosis</t></r></is></c></row>
        <row r="2"><c r="A2"><v>1.38001380000E10</v></c><c r="B2" t="b"><v>1</v></c><c r="C2" t="str"><f>"x"</f><v>x</v></c></row>
        <row r="3"><c r="A3" t="inlineStr"><is><t>&#49;3900139000</t></is></c></row>
        <row r="4"><c r="B4" t="str"><v>call 137&#x20;0013 7000</v></c></row>
        <row r="5"><c r="B5"><f>"13600136000"</f><v>0</v></c></row>"#;
    let f = inspect(&cfg(), XLSX, &hand_book(rows)).unwrap();
    assert_eq!(
        ids(&f),
        vec![
            // The number in exponent notation is the user id as its integer digits; the
            // header `diagnosis` (two runs) makes it sensitive.
            sub(Namespace::Field, "13800138000", true),
            sub(Namespace::Field, "13900139000", false),
            sub(Namespace::CnMobile, "13600136000", false),
            sub(Namespace::CnMobile, "13700137000", false),
        ]
    );
}

#[test]
fn numbers_are_normalised_to_their_integer_digits_when_integral() {
    for (v, want) in [
        ("13800138000", Some("13800138000")),
        ("1.38001380000E10", Some("13800138000")),
        ("1.38001380000e+10", Some("13800138000")),
        ("42.0", Some("42")),
        ("-7", Some("-7")),
        ("0.5", None),
        ("1.5E-3", None),
        ("1E3", Some("1000")),
        ("12.5E1", Some("125")),
        ("abc", None),
        ("", None),
        ("1E999", None),
    ] {
        assert_eq!(integral(v).as_deref(), want, "{v}");
    }
}

#[test]
fn a_workbook_is_held_whole_and_reads_the_same_in_any_chunking() {
    let body = customers();
    let whole = subjects_of(&chunked(&cfg(), XLSX, None, &body, &[body.len()]).unwrap());
    for sizes in [&[1usize][..], &[7, 1000], &[4096]] {
        let mut s = Scanner::new(Arc::new(cfg()), Some(XLSX), None, DATE, false);
        assert_eq!(s.holds_whole(), Some(WholeBody::Workbook));
        let mut i = 0;
        let mut k = 0;
        while i < body.len() {
            let n = sizes[k % sizes.len()].min(body.len() - i);
            s.feed(&body[i..i + n]).unwrap();
            i += n;
            k += 1;
            assert_eq!(s.release_offset(), 0, "nothing is released before the end");
            assert!(s.records().is_empty());
            assert_eq!(s.buffered_bytes(), i as u64);
        }
        s.finish().unwrap();
        assert_eq!(s.release_offset(), body.len() as u64);
        assert_eq!(subjects_of(&s.take_records()), whole);
    }
}

#[test]
fn a_gzip_coded_workbook_is_read() {
    let body = customers();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&body).unwrap();
    let gz = e.finish().unwrap();
    let f = inspect_bytes(&cfg(), Some(XLSX), Some("gzip"), &gz, DATE, false).unwrap();
    assert_eq!(f.subject_count(), 6);
}

#[test]
fn octet_stream_is_read_when_it_is_a_workbook_and_unknown_otherwise() {
    let f = inspect(&cfg(), "application/octet-stream", &customers()).unwrap();
    assert_eq!(f.subject_count(), 6);
    let s = Scanner::new(
        Arc::new(cfg()),
        Some("application/octet-stream"),
        None,
        DATE,
        false,
    );
    assert_eq!(s.holds_whole(), Some(WholeBody::Sniffed));
    // A renamed CSV, a zip of something else, an .xls: unreadable as before.
    let csv = b"user_id,phone\n1,13800138000\n";
    for body in [
        &csv[..],
        &zip_of(&[("data.csv", csv)])[..],
        &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0][..],
    ] {
        assert_eq!(
            inspect(&cfg(), "application/octet-stream", body).unwrap_err(),
            Unreadable::UnknownContentType
        );
    }
    // An empty body is fine.
    assert_eq!(
        inspect(&cfg(), "application/octet-stream", b"")
            .unwrap()
            .subject_count(),
        0
    );
}

#[test]
fn not_a_workbook_under_the_xlsx_type_is_unreadable() {
    let csv = b"user_id,phone\n1,13800138000\n";
    let ole2 = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0, 0, 0];
    for (body, why) in [
        (&csv[..], "not a zip"),
        (&ole2[..], "an OLE2 file (xls or an encrypted workbook)"),
        (&zip_of(&[("data.csv", csv)])[..], "no xl/workbook.xml"),
    ] {
        assert_eq!(
            inspect(&cfg(), XLSX, body).unwrap_err(),
            Unreadable::BadWorkbook(why)
        );
    }
}

#[test]
fn a_truncated_workbook_is_unreadable() {
    let body = customers();
    for cut in [body.len() - 1, body.len() - 30, body.len() / 2, 10] {
        assert!(
            matches!(
                inspect(&cfg(), XLSX, &body[..cut]).unwrap_err(),
                Unreadable::BadWorkbook(_)
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_zip_bomb_entry_is_refused() {
    let limits = DecodeLimits {
        max_decoded_bytes: 8 << 20,
        max_ratio: 100,
        ratio_grace_bytes: 1 << 20,
    };
    let cfg = cfg().with_decode_limits(limits);
    // A sheet that inflates to 32 MiB from a few KiB: over the size and the ratio.
    let mut sheet = b"<worksheet><sheetData><row><c t=\"inlineStr\"><is><t>".to_vec();
    sheet.resize(32 << 20, b'a');
    sheet.extend_from_slice(b"</t></is></c></row></sheetData></worksheet>");
    let bomb = zip_of(&[
        ("xl/workbook.xml", BOOK),
        ("xl/_rels/workbook.xml.rels", RELS),
        ("xl/worksheets/sheet1.xml", &sheet),
    ]);
    assert!(bomb.len() < 200 << 10);
    assert_eq!(inspect(&cfg, XLSX, &bomb).unwrap_err(), Unreadable::Bomb);
    // The same under the ratio only: the declared size is checked, and so is what inflates.
    let cfg = cfg.with_decode_limits(DecodeLimits {
        max_decoded_bytes: 1 << 40,
        ..limits
    });
    assert_eq!(inspect(&cfg, XLSX, &bomb).unwrap_err(), Unreadable::Bomb);
    // A bomb in an entry the gate would not otherwise read is refused too.
    let hidden = zip_of(&[
        ("[Content_Types].xml", TYPES),
        ("xl/workbook.xml", BOOK),
        ("xl/_rels/workbook.xml.rels", RELS),
        ("xl/worksheets/sheet1.xml", b"<worksheet/>"),
        ("xl/media/image1.png", &sheet),
    ]);
    assert_eq!(inspect(&cfg, XLSX, &hidden).unwrap_err(), Unreadable::Bomb);
}

#[test]
fn entries_outside_the_package_are_refused() {
    for name in [
        "../x",
        "/etc/x",
        "xl/../../x",
        "..\\x",
        "xl\\..\\..\\x",
        "C:/x",
    ] {
        let body = zip_of(&[
            ("[Content_Types].xml", TYPES),
            ("xl/workbook.xml", BOOK),
            ("xl/_rels/workbook.xml.rels", RELS),
            ("xl/worksheets/sheet1.xml", b"<worksheet/>"),
            (name, b"13800138000"),
        ]);
        assert!(
            memchr::memmem::find(&body, name.as_bytes()).is_some(),
            "the writer kept {name:?}"
        );
        assert_eq!(
            inspect(&cfg(), XLSX, &body).unwrap_err(),
            Unreadable::BadWorkbook("entry with an absolute or parent path"),
            "{name}"
        );
    }
}

#[test]
fn macros_encryption_doctype_and_duplicate_names_are_unreadable() {
    let base = [
        ("[Content_Types].xml", TYPES),
        ("xl/workbook.xml", BOOK),
        ("xl/_rels/workbook.xml.rels", RELS),
        ("xl/worksheets/sheet1.xml", &b"<worksheet/>"[..]),
    ];
    let with = |extra: (&'static str, &'static [u8])| {
        let mut v = base.to_vec();
        v.push(extra);
        zip_of(&v)
    };
    assert_eq!(
        inspect(&cfg(), XLSX, &with(("xl/vbaProject.bin", b"\x00\x01"))).unwrap_err(),
        Unreadable::BadWorkbook("macro-enabled workbook")
    );
    let xlsm_types = br#"<Types><Override PartName="/xl/workbook.xml" ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"/></Types>"#;
    let mut v = base.to_vec();
    v[0] = ("[Content_Types].xml", xlsm_types);
    assert_eq!(
        inspect(&cfg(), XLSX, &zip_of(&v)).unwrap_err(),
        Unreadable::BadWorkbook("macro-enabled workbook")
    );
    let mut v = base.to_vec();
    v[3] = (
        "xl/worksheets/sheet1.xml",
        br#"<!DOCTYPE x [<!ENTITY a "13800138000">]><worksheet><sheetData><row><c t="inlineStr"><is><t>&a;</t></is></c></row></sheetData></worksheet>"#,
    );
    assert_eq!(
        inspect(&cfg(), XLSX, &zip_of(&v)).unwrap_err(),
        Unreadable::BadWorkbook("a DOCTYPE in a package part")
    );
    assert_eq!(
        inspect(&cfg(), XLSX, &with(("XL/Workbook.xml", BOOK))).unwrap_err(),
        Unreadable::BadWorkbook("two entries with one name")
    );
    // An encrypted entry (ZipCrypto), written by hand: the flag bit 0 of both headers.
    let mut enc = zip_of(&base);
    for sig in [&b"PK\x03\x04"[..], b"PK\x01\x02"] {
        let at: Vec<usize> = memchr::memmem::find_iter(&enc, sig).collect();
        for k in at {
            let flag = if sig[2] == 3 { k + 6 } else { k + 8 };
            enc[flag] |= 1;
        }
    }
    assert_eq!(
        inspect(&cfg(), XLSX, &enc).unwrap_err(),
        Unreadable::BadWorkbook("encrypted entry")
    );
}

#[test]
fn more_than_ten_thousand_entries_are_refused() {
    let names: Vec<String> = (0..10_001).map(|i| format!("xl/media/{i}.bin")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("xl/workbook.xml", BOOK),
        ("xl/_rels/workbook.xml.rels", RELS),
    ];
    entries.extend(names.iter().map(|n| (n.as_str(), &b""[..])));
    assert_eq!(
        inspect(&cfg(), XLSX, &zip_of(&entries)).unwrap_err(),
        Unreadable::BadWorkbook("more than 10,000 entries")
    );
    // 10,000 are fine.
    entries.truncate(9_999);
    entries.push(("xl/worksheets/sheet1.xml", b"<worksheet/>"));
    assert!(inspect(&cfg(), XLSX, &zip_of(&entries)).is_ok());
}

#[test]
fn a_workbook_over_max_workbook_bytes_is_too_large_and_an_octet_stream_unknown() {
    let body = customers();
    let cfg = cfg().with_max_workbook_bytes(body.len() as u64 - 1);
    assert_eq!(
        inspect(&cfg, XLSX, &body).unwrap_err(),
        Unreadable::WorkbookTooLarge
    );
    // Sniffed: too large to tell whether it is a workbook; unreadable as any unknown type.
    assert_eq!(
        inspect(&cfg, "application/octet-stream", &body).unwrap_err(),
        Unreadable::UnknownContentType
    );
    // At the limit it is read.
    let cfg = cfg.with_max_workbook_bytes(body.len() as u64);
    assert_eq!(inspect(&cfg, XLSX, &body).unwrap().subject_count(), 6);
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (disp, ctype, data) in parts {
        b.extend_from_slice(b"--BB\r\nContent-Disposition: form-data; ");
        b.extend_from_slice(disp.as_bytes());
        b.extend_from_slice(b"\r\n");
        if let Some(t) = ctype {
            b.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"--BB--\r\n");
    b
}

#[test]
fn multipart_parts_are_workbooks_by_name_type_or_content() {
    let book = customers();
    let mp = "multipart/form-data; boundary=BB";
    for (disp, ctype) in [
        (
            r#"name="file"; filename="customers.xlsx""#,
            Some("application/octet-stream"),
        ),
        (
            r#"name="file"; filename="CUSTOMERS.XLSX""#,
            Some("text/csv"),
        ),
        (r#"name="file"; filename="customers.xlsx""#, None),
        (r#"name="file""#, Some("application/octet-stream")),
        (r#"name="file""#, Some(XLSX)),
    ] {
        let body = multipart(&[(r#"name="note""#, None, b"hello"), (disp, ctype, &book)]);
        let f = inspect(&cfg(), mp, &body).unwrap_or_else(|e| panic!("{disp} {ctype:?}: {e}"));
        assert_eq!(f.subject_count(), 6, "{disp} {ctype:?}");
    }
    // A renamed CSV as customers.xlsx, macro-enabled and binary workbooks by name.
    let csv = b"user_id\n1\n";
    for (disp, ctype, data) in [
        (
            r#"name="f"; filename="customers.xlsx""#,
            Some("application/octet-stream"),
            &csv[..],
        ),
        (r#"name="f"; filename="c.xlsm""#, Some(XLSX), &book[..]),
        (r#"name="f"; filename="c.XLS""#, Some("text/csv"), &csv[..]),
        (r#"name="f""#, Some("application/octet-stream"), &csv[..]),
    ] {
        let body = multipart(&[(disp, ctype, data)]);
        assert!(inspect(&cfg(), mp, &body).is_err(), "{disp} {ctype:?}");
    }
    // The part's workbook is held inside the scanner and reported as such.
    let body = multipart(&[(r#"name="f"; filename="a.xlsx""#, None, &book)]);
    let mut s = Scanner::new(Arc::new(cfg()), Some(mp), None, DATE, false);
    s.feed(&body[..body.len() - 100]).unwrap();
    assert!(s.buffered_bytes() > book.len() as u64 / 2);
    assert_eq!(s.holds_whole(), None);
}

/// Every value calamine reads, as the gate should see it (integral numbers as digits).
fn calamine_values(body: &[u8]) -> Vec<String> {
    use calamine::{Data, Reader as _};
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(body)).unwrap();
    let mut out = Vec::new();
    for name in wb.sheet_names() {
        out.push(name.clone());
        let range = wb.worksheet_range(&name).unwrap();
        for row in range.rows() {
            for c in row {
                match c {
                    Data::String(s) => out.push(s.clone()),
                    Data::Int(i) => out.push(i.to_string()),
                    Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                        out.push(format!("{}", *f as i64));
                    }
                    Data::Float(f) => out.push(f.to_string()),
                    _ => {}
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Val {
    Text(String),
    Num(f64),
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        Just(Val::Text("13800138000".to_owned())),
        Just(Val::Text("user_id".to_owned())),
        Just(Val::Text("名字 张三 <&>\"'".to_owned())),
        "[a-zA-Z0-9 ,.@-]{1,16}".prop_map(Val::Text),
        "\\PC{1,8}".prop_map(Val::Text),
        (0u64..20_000_000_000).prop_map(|n| Val::Num(n as f64)),
        Just(Val::Num(13_900_139_000.0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every cell value (and sheet name) calamine reads from a generated workbook reached the
    /// gate's detectors: the gate reads no less of a workbook than a well-kept reader does.
    #[test]
    fn the_gate_inspects_every_value_calamine_reads(
        sheets in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(prop::option::of(val()), 0..5), 0..6),
            1..4,
        )
    ) {
        let mut wb = XWorkbook::new();
        for (k, rows) in sheets.iter().enumerate() {
            let s = wb.add_worksheet();
            s.set_name(format!("S{k} 13{k}00138000")).unwrap();
            for (r, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    let (r, c) = (r as u32, c as u16);
                    match v {
                        Some(Val::Text(t)) => { s.write_string(r, c, t).unwrap(); }
                        Some(Val::Num(n)) => { s.write_number(r, c, *n).unwrap(); }
                        None => {}
                    }
                }
            }
        }
        let body = wb.save_to_buffer().unwrap();
        let want = calamine_values(&body);
        trace::start();
        let r = inspect(&cfg(), XLSX, &body);
        let seen = trace::take();
        prop_assert!(r.is_ok(), "the gate could not read a workbook calamine reads: {r:?}");
        for w in want.iter().filter(|w| !w.trim().is_empty()) {
            prop_assert!(
                seen.iter().any(|s| s.windows(w.len()).any(|x| x == w.as_bytes())),
                "calamine reads {w:?}, the gate never inspected it"
            );
        }
    }
}

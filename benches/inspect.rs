//! Inspection engine throughput (SPEC §10): the streaming scanner vs
//! `serde_json::from_slice::<Value>` on the same ~1 MB bodies of realistic customer records
//! (JSON array, NDJSON, CSV), plus gzip-encoded JSON; the XML scanner vs `roxmltree`
//! building its tree of the same ~1 MB SOAP batch (`cargo bench --bench inspect -- xml`); and
//! an xlsx workbook of the CSV's columns (written by `rust_xlsxwriter`; phones and ids as
//! number cells), judged whole.
//!
//! WebSocket message judging (`cargo bench --bench inspect -- websocket`): one ~1 KB JSON
//! client message as it arrives in a masked permessage-deflate frame — header parsed,
//! unmasked, inflated, inspected.
//!
//! Run: `cargo bench --bench inspect` (`INSPECT_CPU_TABLE=1` first prints MB per CPU-second;
//! `INSPECT_ONCE` scans one body a fixed number of times, for instruction counts;
//! `TRANSFER_GATE_SIMD=scalar|portable|avx2|avx512` forces stage 1's path, printed with the table).

// A bench is a test program: a body the scanner does not read exactly must stop it.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use transfer_gate::inspect::{resident_id_check_char, InspectConfig, Namespace, Scanner};
use transfer_gate::model::{Category, CategorySet};

/// The subjects of a body: (namespace, normalised identifier) → (categories, sensitive).
type Subjects = BTreeMap<(Namespace, Vec<u8>), (CategorySet, bool)>;

/// A subject for a failure message: namespace, identifier length (never the identifier) and
/// what the other side holds for it.
type Shown = (Namespace, usize, Option<(CategorySet, bool)>);

const DATE: time::Date = time::macros::date!(2026 - 11 - 25);
const TARGET: usize = 1 << 20;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SURNAMES: [&str; 8] = [
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang",
];
const GIVEN: [&str; 8] = ["Wei", "Fang", "Na", "Min", "Jing", "Lei", "Qiang", "Yan"];
const CITIES: [&str; 6] = [
    "上海市浦东新区",
    "北京市朝阳区",
    "广州市天河区",
    "深圳市南山区",
    "杭州市西湖区",
    "成都市武侯区",
];
const SKUS: [&str; 5] = [
    "SKU-1001-BLK",
    "SKU-2044-WHT",
    "SKU-3100-RED",
    "SKU-0042-XL",
    "SKU-7777-S",
];

struct Customer {
    id: u64,
    name: String,
    phone: String,
    id_no: String,
    email: String,
    address: String,
    orders: Vec<(String, String, u64, u64)>,
}

fn customer(r: &mut Rng, i: u64) -> Customer {
    let s = SURNAMES[r.below(8) as usize];
    let g = GIVEN[r.below(8) as usize];
    let d17 = format!(
        "{:06}{:04}{:02}{:02}{:03}",
        110_101 + r.below(500),
        1950 + r.below(60),
        1 + r.below(12),
        1 + r.below(28),
        r.below(1000)
    );
    let id_no = format!("{d17}{}", resident_id_check_char(d17.as_bytes()) as char);
    let orders = (0..1 + r.below(3))
        .map(|k| {
            (
                format!("O-2026{:06}-{k}", r.below(1_000_000)),
                SKUS[r.below(5) as usize].to_owned(),
                1 + r.below(5),
                r.below(100_000),
            )
        })
        .collect();
    Customer {
        id: 10_000_000 + i,
        name: format!("{s} {g}"),
        phone: format!("1{}{:09}", 3 + r.below(7), r.below(1_000_000_000)),
        id_no,
        email: format!(
            "{}.{}{}@example.com",
            g.to_lowercase(),
            s.to_lowercase(),
            r.below(1000)
        ),
        address: format!(
            "{}{}路{}号",
            CITIES[r.below(6) as usize],
            1 + r.below(999),
            1 + r.below(200)
        ),
        orders,
    }
}

fn json_record(c: &Customer) -> String {
    let orders: Vec<String> = c
        .orders
        .iter()
        .map(|(id, sku, qty, cents)| {
            format!(
                r#"{{"order_id":"{id}","sku":"{sku}","qty":{qty},"amount":{}.{:02},"currency":"CNY","status":"shipped"}}"#,
                cents / 100,
                cents % 100
            )
        })
        .collect();
    format!(
        r#"{{"customer_id":{},"name":"{}","phone":"{}","id_no":"{}","email":"{}","address":"{}","vip":true,"score":4.5e0,"orders":[{}],"created_at":"2026-03-01T08:00:00+08:00"}}"#,
        c.id,
        c.name,
        c.phone,
        c.id_no,
        c.email,
        c.address,
        orders.join(",")
    )
}

/// A generated body and the customers in it (in body order).
struct Body {
    bytes: Vec<u8>,
    customers: Vec<Customer>,
}

impl Body {
    /// What the default configuration must find: one record per customer whose one subject is
    /// the customer id (the `customer_id` subject field). Its mobile number, resident ID and
    /// e-mail address are in the record, so they are no subjects of their own: they give it
    /// the categories contact (also the `phone`, `email` and `address` fields) and identity
    /// (the resident ID, sensitive). Nothing else in the body is PI of anyone.
    fn subjects(&self) -> Subjects {
        let cats = CategorySet::of(Category::Contact).union(CategorySet::of(Category::Identity));
        self.customers
            .iter()
            .map(|c| {
                (
                    (Namespace::Field, c.id.to_string().into_bytes()),
                    (cats, true),
                )
            })
            .collect()
    }

    /// What the parser-only configuration (`customer_id` only, no detectors or categories)
    /// must find: the customer ids, each with the basic category only (a record that carries
    /// no other category), not sensitive.
    fn ids(&self) -> Subjects {
        self.customers
            .iter()
            .map(|c| {
                (
                    (Namespace::Field, c.id.to_string().into_bytes()),
                    (CategorySet::of(Category::Basic), false),
                )
            })
            .collect()
    }
}

fn gen_json() -> Body {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from(r#"{"batch_id":"b-1","customers":["#);
    let mut customers = Vec::new();
    while out.len() < TARGET {
        if !customers.is_empty() {
            out.push(',');
        }
        let c = customer(&mut r, customers.len() as u64);
        out.push_str(&json_record(&c));
        customers.push(c);
    }
    out.push_str("]}");
    Body {
        bytes: out.into_bytes(),
        customers,
    }
}

fn pb_varint(mut v: u64, out: &mut Vec<u8>) {
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

fn pb_bytes(n: u64, v: &[u8], out: &mut Vec<u8>) {
    pb_varint(n << 3 | 2, out);
    pb_varint(v.len() as u64, out);
    out.extend_from_slice(v);
}

/// A gRPC body of `partner.v1.Customer` messages (`tests/data/partner.proto`), one frame per
/// customer: name, phone, ID number, address (city), e-mail, member id (a subject field of the
/// default configuration when the schema names it), notes (the orders as text).
fn gen_grpc() -> Body {
    let mut r = Rng(0x5eed_1234_5678_9abc);
    let mut out = Vec::new();
    let mut customers = Vec::new();
    while out.len() < TARGET {
        let c = customer(&mut r, customers.len() as u64);
        let mut m = Vec::new();
        pb_bytes(1, c.name.as_bytes(), &mut m);
        pb_bytes(2, c.phone.as_bytes(), &mut m);
        pb_bytes(3, c.id_no.as_bytes(), &mut m);
        let mut addr = Vec::new();
        pb_bytes(1, c.address.as_bytes(), &mut addr);
        pb_bytes(4, &addr, &mut m);
        pb_bytes(5, c.email.as_bytes(), &mut m);
        pb_varint(6 << 3, &mut m);
        pb_varint(c.id, &mut m);
        for (id, sku, qty, cents) in &c.orders {
            pb_bytes(8, format!("{id} {sku} x{qty} {cents}").as_bytes(), &mut m);
        }
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        customers.push(c);
    }
    Body {
        bytes: out,
        customers,
    }
}

/// The default configuration with the fixture's descriptor set.
fn with_partner_schema() -> Arc<InspectConfig> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/partner.binpb");
    let schemas = transfer_gate::inspect::ProtobufSchemas::load(&[p]).expect("the fixture loads");
    Arc::new(InspectConfig::default().with_protobuf_schemas(Some(schemas)))
}

const GRPC_TYPED: &str = "application/grpc; proto=partner.v1.Customer";

fn gen_ndjson() -> Body {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut out = String::new();
    let mut customers = Vec::new();
    while out.len() < TARGET {
        let c = customer(&mut r, customers.len() as u64);
        out.push_str(&json_record(&c));
        out.push('\n');
        customers.push(c);
    }
    Body {
        bytes: out.into_bytes(),
        customers,
    }
}

fn gen_csv() -> Body {
    let mut r = Rng(0x0bad_cafe_dead_beef);
    let mut out = String::from("customer_id,name,phone,id_no,email,address,note\r\n");
    let mut customers = Vec::new();
    while out.len() < TARGET {
        let c = customer(&mut r, customers.len() as u64);
        out.push_str(&format!(
            "{},{},{},{},{},\"{}, \"\"lobby\"\"\",{}\r\n",
            c.id, c.name, c.phone, c.id_no, c.email, c.address, c.orders[0].0
        ));
        customers.push(c);
    }
    Body {
        bytes: out.into_bytes(),
        customers,
    }
}

/// A SOAP 1.1 envelope whose `Body` holds a batch of the same customer records as elements
/// (namespace prefixes, the orders as attributes of empty elements), about 1 MB.
fn gen_xml() -> Body {
    let mut r = Rng(0x005e_ed0f_50a9_0001);
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:crm="urn:example:crm"><soap:Header><crm:Auth>token-b-1</crm:Auth></soap:Header><soap:Body><crm:SyncCustomers batch_id="b-1">
"#,
    );
    let mut customers = Vec::new();
    while out.len() < TARGET {
        let c = customer(&mut r, customers.len() as u64);
        let orders: String = c
            .orders
            .iter()
            .map(|(id, sku, qty, cents)| {
                format!(
                    r#"<crm:order order_id="{id}" sku="{sku}" qty="{qty}" amount="{}.{:02}" currency="CNY" status="shipped"/>"#,
                    cents / 100,
                    cents % 100
                )
            })
            .collect();
        out.push_str(&format!(
            "<crm:Customer><crm:customer_id>{}</crm:customer_id><crm:name>{}</crm:name><crm:phone>{}</crm:phone><crm:id_no>{}</crm:id_no><crm:email>{}</crm:email><crm:address>{}</crm:address><crm:vip>true</crm:vip><crm:orders>{orders}</crm:orders><crm:created_at>2026-03-01T08:00:00+08:00</crm:created_at></crm:Customer>\n",
            c.id, c.name, c.phone, c.id_no, c.email, c.address
        ));
        customers.push(c);
    }
    out.push_str("</crm:SyncCustomers></soap:Body></soap:Envelope>");
    Body {
        bytes: out.into_bytes(),
        customers,
    }
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The CSV body's columns as a workbook of about as many customers (ids and phones as number
/// cells, the rest shared strings).
fn gen_xlsx() -> Body {
    let mut r = Rng(0x0bad_cafe_dead_beef);
    let mut wb = rust_xlsxwriter::Workbook::new();
    let s = wb.add_worksheet();
    for (k, h) in [
        "customer_id",
        "name",
        "phone",
        "id_no",
        "email",
        "address",
        "note",
    ]
    .iter()
    .enumerate()
    {
        s.write_string(0, k as u16, *h).expect("write the header");
    }
    let mut customers = Vec::new();
    // About as many rows as the ~1 MB CSV body holds.
    while customers.len() < 7_000 {
        let c = customer(&mut r, customers.len() as u64);
        let row = customers.len() as u32 + 1;
        s.write_number(row, 0, c.id as f64).expect("write a cell");
        s.write_string(row, 1, &c.name).expect("write a cell");
        let phone: f64 = c.phone.parse().expect("a phone is digits");
        s.write_number(row, 2, phone).expect("write a cell");
        s.write_string(row, 3, &c.id_no).expect("write a cell");
        s.write_string(row, 4, &c.email).expect("write a cell");
        s.write_string(row, 5, format!("{}, \"lobby\"", c.address))
            .expect("write a cell");
        s.write_string(row, 6, &c.orders[0].0)
            .expect("write a cell");
        customers.push(c);
    }
    Body {
        bytes: wb.save_to_buffer().expect("write the workbook"),
        customers,
    }
}

/// `roxmltree` building its tree of `body` (UTF-8 checked first, as the gate checks it).
fn roxmltree_parse(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| roxmltree::Document::parse(s).ok())
        .is_some()
}

/// Scans `body` fed in `chunk`-byte pieces, draining the records after every piece as the
/// proxy does; returns the number of records. An unreadable body stops the bench.
fn scan(cfg: &Arc<InspectConfig>, ct: &str, enc: Option<&str>, body: &[u8], chunk: usize) -> usize {
    let mut s = Scanner::new(cfg.clone(), Some(ct), enc, DATE, false);
    let mut n = 0;
    for c in body.chunks(chunk) {
        if let Err(e) = s.feed(c) {
            panic!("{ct}: the scanner rejected the bench body: {e}");
        }
        n += s.records().len();
        s.clear_records();
    }
    if let Err(e) = s.finish() {
        panic!("{ct}: the scanner rejected the bench body at its end: {e}");
    }
    n + s.records().len()
}

/// Checks, before anything is timed, that scanning `body` the way the bench does finds exactly
/// `want` (as a set of subjects) in exactly `records` records; panics with the difference.
fn check(
    what: &str,
    cfg: &Arc<InspectConfig>,
    ct: &str,
    enc: Option<&str>,
    body: &[u8],
    want: &Subjects,
    records: usize,
) {
    let mut s = Scanner::new(cfg.clone(), Some(ct), enc, DATE, false);
    let mut got = Subjects::new();
    let mut n = 0;
    let mut drain = |s: &mut Scanner| {
        for r in s.take_records() {
            n += 1;
            for x in r.subjects {
                let e = got
                    .entry((x.namespace, x.id))
                    .or_insert((CategorySet::EMPTY, false));
                *e = (e.0.union(x.categories), e.1 || x.sensitive);
            }
        }
    };
    for c in body.chunks(64 * 1024) {
        if let Err(e) = s.feed(c) {
            panic!("{what}: the scanner rejected the bench body: {e}");
        }
        drain(&mut s);
    }
    if let Err(e) = s.finish() {
        panic!("{what}: the scanner rejected the bench body at its end: {e}");
    }
    drain(&mut s);
    // Identifiers are bench data (generated, not real people): shown by length only.
    let differ = |a: &Subjects, b: &Subjects| -> Vec<Shown> {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .take(3)
            .map(|((ns, id), _)| (*ns, id.len(), b.get(&(*ns, id.clone())).copied()))
            .collect()
    };
    assert!(
        got == *want,
        "{what}: {} subjects found, {} expected; expected but not found as expected {:?}, found but not expected {:?}",
        got.len(),
        want.len(),
        differ(want, &got),
        differ(&got, want)
    );
    assert_eq!(n, records, "{what}: records");
    assert_eq!(
        scan(cfg, ct, enc, body, 64 * 1024),
        records,
        "{what}: records counted by the timed scan"
    );
}

/// Every bench body is checked for the exact subjects it holds before it is timed.
fn check_all(
    cfg: &Arc<InspectConfig>,
    bare: &Arc<InspectConfig>,
    json: &Body,
    ndjson: &Body,
    csv: &Body,
    gz: &[u8],
) {
    let all = |b: &Body| b.customers.len();
    let j = "application/json";
    check(
        "json",
        cfg,
        j,
        None,
        &json.bytes,
        &json.subjects(),
        all(json),
    );
    check(
        "json.gz",
        cfg,
        j,
        Some("gzip"),
        gz,
        &json.subjects(),
        all(json),
    );
    check(
        "json, parser only",
        bare,
        j,
        None,
        &json.bytes,
        &json.ids(),
        all(json),
    );
    check(
        "ndjson",
        cfg,
        "application/x-ndjson",
        None,
        &ndjson.bytes,
        &ndjson.subjects(),
        all(ndjson),
    );
    check(
        "csv",
        cfg,
        "text/csv",
        None,
        &csv.bytes,
        &csv.subjects(),
        all(csv),
    );
}

/// CPU time of this thread in nanoseconds (`/proc/thread-self/schedstat`), so that the
/// per-core figures hold on a machine shared with other builds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// MB/s (10^6 bytes) per CPU-second of `f` over `bytes`, measured for about two CPU-seconds.
fn cpu_rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = thread_cpu_ns();
    let mut iters = 0u64;
    while thread_cpu_ns() - start < 2_000_000_000 {
        f();
        iters += 1;
    }
    let secs = (thread_cpu_ns() - start) as f64 / 1e9;
    (bytes as f64 * iters as f64) / secs / 1e6
}

/// The CPU model and the SIMD extensions it offers, printed with every figure: the same commit
/// gives different figures on hosts with and without AVX-512.
fn cpu_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string())
    };
    let flags = field("flags");
    let simd: Vec<&str> = flags
        .split_whitespace()
        .filter(|f| {
            f.starts_with("sse")
                || f.starts_with("ssse")
                || f.starts_with("avx")
                || *f == "pclmulqdq"
                || *f == "bmi2"
        })
        .collect();
    format!(
        "cpu: {} | simd: {} | stage 1: {} ({} selects)",
        field("model name"),
        simd.join(" "),
        transfer_gate::inspect::simd_path().as_str(),
        transfer_gate::inspect::SIMD_ENV,
    )
}

/// Prints the side-by-side CPU-time table recorded in BENCHMARKS.md.
fn cpu_table(cfg: &Arc<InspectConfig>, json: &[u8], ndjson: &[u8], csv: &[u8], gz: &[u8]) {
    if std::env::var_os("INSPECT_CPU_TABLE").is_none() {
        return;
    }
    println!("{}", cpu_line());
    println!("format   bytes     engine MB/s(cpu)  serde_json::Value MB/s(cpu)  ratio");
    for (name, ct, body) in [
        ("json", "application/json", json),
        ("ndjson", "application/x-ndjson", ndjson),
        ("csv", "text/csv", csv),
    ] {
        let e = cpu_rate(body.len(), || {
            black_box(scan(cfg, ct, None, black_box(body), 64 * 1024));
        });
        let v = if name == "csv" {
            f64::NAN
        } else {
            cpu_rate(body.len(), || {
                let mut ok = 0usize;
                for doc in body.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                    ok += usize::from(serde_json::from_slice::<serde_json::Value>(doc).is_ok());
                }
                black_box(ok);
            })
        };
        println!(
            "{name:<8} {:<9} {e:>16.0}  {v:>27.0}  {:>5.2}",
            body.len(),
            e / v
        );
    }
    let bare = Arc::new(InspectConfig::for_tests(&["customer_id"], &[], &[]));
    let b = cpu_rate(json.len(), || {
        black_box(scan(
            &bare,
            "application/json",
            None,
            black_box(json),
            64 * 1024,
        ));
    });
    println!(
        "json     {:<9} {b:>16.0}  (one subject field, no detectors, no categories)",
        json.len()
    );
    let g = cpu_rate(json.len(), || {
        black_box(scan(
            cfg,
            "application/json",
            Some("gzip"),
            black_box(gz),
            64 * 1024,
        ));
    });
    println!(
        "json.gz  {:<9} {g:>16.0}  (decoded MB/s, gzip -6, {} encoded bytes)",
        json.len(),
        gz.len()
    );
}

fn benches(c: &mut Criterion) {
    let cfg = Arc::new(InspectConfig::default());
    let bare = Arc::new(InspectConfig::for_tests(&["customer_id"], &[], &[]));
    let (json_body, ndjson_body, csv_body) = (gen_json(), gen_ndjson(), gen_csv());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json_body.bytes).expect("gzip the JSON body");
    let gz = gz.finish().expect("gzip the JSON body");
    check_all(&cfg, &bare, &json_body, &ndjson_body, &csv_body, &gz);
    let xlsx_body = gen_xlsx();
    check(
        "xlsx",
        &cfg,
        XLSX,
        None,
        &xlsx_body.bytes,
        &xlsx_body.subjects(),
        xlsx_body.customers.len(),
    );
    let (json, ndjson, csv) = (json_body.bytes, ndjson_body.bytes, csv_body.bytes);
    let xlsx = xlsx_body.bytes;

    cpu_table(&cfg, &json, &ndjson, &csv, &gz);

    let mut g = c.benchmark_group("inspect");
    g.sample_size(30);
    for (name, ct, body) in [
        ("json", "application/json", &json),
        ("ndjson", "application/x-ndjson", &ndjson),
        ("csv", "text/csv", &csv),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("engine/{name}"), |b| {
            b.iter(|| black_box(scan(&cfg, ct, None, black_box(body), 64 * 1024)))
        });
        if name == "json" {
            g.bench_function(format!("serde_json_value/{name}"), |b| {
                b.iter(|| {
                    black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)).is_ok())
                })
            });
        }
        if name == "ndjson" {
            g.bench_function(format!("serde_json_value/{name}"), |b| {
                b.iter(|| {
                    let mut ok = 0;
                    for line in body.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                        ok +=
                            usize::from(serde_json::from_slice::<serde_json::Value>(line).is_ok());
                    }
                    black_box(ok)
                })
            });
        }
    }
    g.throughput(Throughput::Bytes(xlsx.len() as u64));
    g.bench_function("engine/xlsx(workbook bytes)", |b| {
        b.iter(|| black_box(scan(&cfg, XLSX, None, black_box(&xlsx), 64 * 1024)))
    });
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("engine/json_parse_only", |b| {
        b.iter(|| {
            black_box(scan(
                &bare,
                "application/json",
                None,
                black_box(&json),
                64 * 1024,
            ))
        })
    });
    g.bench_function("engine/json_gzip(decoded bytes)", |b| {
        b.iter(|| {
            black_box(scan(
                &cfg,
                "application/json",
                Some("gzip"),
                black_box(&gz),
                64 * 1024,
            ))
        })
    });
    // XML (SOAP batch) against roxmltree building its tree of the same bytes (SPEC §10).
    let xml_body = gen_xml();
    check(
        "xml (SOAP)",
        &cfg,
        "application/soap+xml",
        None,
        &xml_body.bytes,
        &xml_body.subjects(),
        xml_body.customers.len(),
    );
    assert!(
        roxmltree_parse(&xml_body.bytes),
        "roxmltree reads the SOAP body"
    );
    let xml = xml_body.bytes;
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.bench_function("engine/xml_soap", |b| {
        b.iter(|| {
            black_box(scan(
                &cfg,
                "application/soap+xml",
                None,
                black_box(&xml),
                64 * 1024,
            ))
        })
    });
    g.bench_function("roxmltree/xml_soap", |b| {
        b.iter(|| black_box(roxmltree_parse(black_box(&xml))))
    });
    // gRPC frames of protobuf customers, without a schema (the detectors find the phone, ID
    // number and e-mail of each) and with the fixture's descriptor set (`member_id` is the
    // record's subject).
    let grpc = gen_grpc();
    let typed = with_partner_schema();
    assert_eq!(
        scan(&cfg, "application/grpc", None, &grpc.bytes, 64 * 1024),
        grpc.customers.len()
    );
    assert_eq!(
        scan(&typed, GRPC_TYPED, None, &grpc.bytes, 64 * 1024),
        grpc.customers.len()
    );
    let grpc = grpc.bytes;
    g.throughput(Throughput::Bytes(grpc.len() as u64));
    g.bench_function("engine/grpc_protobuf(schemaless)", |b| {
        b.iter(|| {
            black_box(scan(
                &cfg,
                "application/grpc",
                None,
                black_box(&grpc),
                64 * 1024,
            ))
        })
    });
    g.bench_function("engine/grpc_protobuf(descriptor set)", |b| {
        b.iter(|| black_box(scan(&typed, GRPC_TYPED, None, black_box(&grpc), 64 * 1024)))
    });
    // One WebSocket client message: a masked, deflated frame of ~1 KB of JSON records.
    let (frame, plain_len) = ws_frame();
    assert!(ws_judge(&cfg, &frame) >= 6, "every record's subject found");
    g.throughput(Throughput::Bytes(plain_len as u64));
    g.bench_function(
        "engine/websocket_message(1 KB JSON, deflated, masked)",
        |b| b.iter(|| black_box(ws_judge(&cfg, black_box(&frame)))),
    );
    g.finish();
}

/// A client frame (masked, RSV1: permessage-deflate) holding ~1 KB of JSON, and the JSON's length.
fn ws_frame() -> (Vec<u8>, usize) {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};
    let mut r = Rng(7);
    let recs: Vec<String> = (0..6).map(|i| json_record(&customer(&mut r, i))).collect();
    let json = format!("[{}]", recs.join(","));
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut deflated = Vec::with_capacity(json.len() + 64);
    c.compress_vec(json.as_bytes(), &mut deflated, flate2::FlushCompress::Sync)
        .expect("deflate");
    deflated.truncate(deflated.len() - 4);
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        opcode: OpCode::Data(Data::Text),
        mask: Some([0x12, 0x34, 0x56, 0x78]),
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    Frame::from_payload(header, deflated.into())
        .format(&mut out)
        .expect("frame");
    (out, json.len())
}

/// Judges one WebSocket frame as the gate does: header, unmask, inflate, inspect; the subjects.
fn ws_judge(cfg: &Arc<InspectConfig>, frame: &[u8]) -> usize {
    use transfer_gate::proxy::websocket::{inflate, judge_message, Inflated};
    let mut cur = std::io::Cursor::new(frame);
    let (h, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cur)
        .expect("header")
        .expect("whole header");
    let start = cur.position() as usize;
    let mut payload = frame[start..start + len as usize].to_vec();
    let mask = h.mask.expect("masked");
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    let mut d = flate2::Decompress::new(false);
    let Inflated::Ok(plain) = inflate(&mut d, &payload, 1 << 20) else {
        panic!("inflate")
    };
    let f = judge_message(
        cfg,
        true,
        transfer_gate::config::WebSocketBinary::Unreadable,
        &plain,
        DATE,
        false,
    )
    .expect("readable");
    f.subject_count()
}

/// `INSPECT_ONCE=<json|ndjson|csv|xml|xlsx|bare|grpc|grpc_typed|stage1> INSPECT_REPEAT=<n>`: scan that body `n` times and exit
/// (`stage1`: stage 1 of the JSON scanner alone over the JSON body),
/// for instruction counts under `valgrind --tool=callgrind` (repeatable on a loaded machine,
/// unlike time): the difference between two repeat counts is the cost of the scans alone. It
/// also prints the best and median MB per CPU-second of five batches of the repetitions.
fn once(what: &str) {
    let n: usize = std::env::var("INSPECT_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if what == "stage1" {
        // Stage 1 of the JSON scanner alone, on the path `TRANSFER_GATE_SIMD` selects.
        let body = gen_json().bytes;
        let (best, median) = cpu_rates(n, body.len(), || {
            transfer_gate::inspect::stage1_positions(black_box(&body))
        });
        println!(
            "stage1 ({}): {} bytes x {n}: MB per CPU-second best {best:.0}, median {median:.0}",
            transfer_gate::inspect::simd_path().as_str(),
            body.len()
        );
        return;
    }
    let cfg = Arc::new(InspectConfig::default());
    let bare = Arc::new(InspectConfig::for_tests(&["customer_id"], &[], &[]));
    let typed = with_partner_schema();
    let (cfg, ct, body) = match what {
        "ndjson" => (&cfg, "application/x-ndjson", gen_ndjson()),
        "csv" => (&cfg, "text/csv", gen_csv()),
        "xlsx" => (&cfg, XLSX, gen_xlsx()),
        "bare" => (&bare, "application/json", gen_json()),
        "xml" => (&cfg, "application/soap+xml", gen_xml()),
        "grpc" => (&cfg, "application/grpc", gen_grpc()),
        "grpc_typed" => (&typed, GRPC_TYPED, gen_grpc()),
        _ => (&cfg, "application/json", gen_json()),
    };
    let want = if what == "bare" {
        body.ids()
    } else {
        body.subjects()
    };
    if what.starts_with("grpc") {
        // One record per message (checked by the unit and integration tests otherwise).
        assert_eq!(
            scan(cfg, ct, None, &body.bytes, 64 * 1024),
            body.customers.len()
        );
    } else {
        check(
            what,
            cfg,
            ct,
            None,
            &body.bytes,
            &want,
            body.customers.len(),
        );
    }
    let body = body.bytes;
    let mut records = 0;
    let (best, median) = cpu_rates(n, body.len(), || {
        let r = scan(cfg, ct, None, black_box(&body), 64 * 1024);
        records += r;
        r
    });
    let per_body = records as f64 / n as f64;
    let mb = body.len() as f64 / 1e6;
    println!(
        "{what}: {} bytes x {n}: {records} records; MB per CPU-second best {best:.0}, median {median:.0}; records per CPU-second best {:.0}, median {:.0}",
        body.len(),
        best / mb * per_body,
        median / mb * per_body,
    );
}

/// Runs `f` (one pass over `len` bytes) `n` times in five batches — the thread's CPU time
/// moves in scheduler ticks — and gives the best and median MB per CPU-second of the batches.
fn cpu_rates(n: usize, len: usize, mut f: impl FnMut() -> usize) -> (f64, f64) {
    let batch = (n / 5).max(1);
    let mut rates = Vec::new();
    for _ in 0..n.div_ceil(batch) {
        let t = thread_cpu_ns();
        for _ in 0..batch {
            black_box(f());
        }
        let secs = (thread_cpu_ns() - t).max(1) as f64 / 1e9;
        rates.push((len * batch) as f64 / secs / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    (
        rates.last().copied().unwrap_or(0.0),
        rates.get(rates.len() / 2).copied().unwrap_or(0.0),
    )
}

fn main() {
    if let Ok(what) = std::env::var("INSPECT_ONCE") {
        once(&what);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}

//! Inspection engine throughput (SPEC §10): the streaming scanner vs
//! `serde_json::from_slice::<Value>` on the same ~1 MB bodies of realistic customer records
//! (JSON array, NDJSON, CSV), plus gzip-encoded JSON.
//!
//! Run: `cargo bench --bench inspect` (`INSPECT_CPU_TABLE=1` first prints MB per CPU-second;
//! `INSPECT_ONCE` scans one body a fixed number of times, for instruction counts).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use transfer_gate::inspect::{resident_id_check_char, InspectConfig, Scanner};

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

fn gen_json() -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from(r#"{"batch_id":"b-1","customers":["#);
    let mut i = 0;
    while out.len() < TARGET {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_record(&customer(&mut r, i)));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

fn gen_ndjson() -> Vec<u8> {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut out = String::new();
    let mut i = 0;
    while out.len() < TARGET {
        out.push_str(&json_record(&customer(&mut r, i)));
        out.push('\n');
        i += 1;
    }
    out.into_bytes()
}

fn gen_csv() -> Vec<u8> {
    let mut r = Rng(0x0bad_cafe_dead_beef);
    let mut out = String::from("customer_id,name,phone,id_no,email,address,note\r\n");
    let mut i = 0;
    while out.len() < TARGET {
        let c = customer(&mut r, i);
        out.push_str(&format!(
            "{},{},{},{},{},\"{}, \"\"lobby\"\"\",{}\r\n",
            c.id, c.name, c.phone, c.id_no, c.email, c.address, c.orders[0].0
        ));
        i += 1;
    }
    out.into_bytes()
}

fn scan(cfg: &Arc<InspectConfig>, ct: &str, enc: Option<&str>, body: &[u8], chunk: usize) -> usize {
    let mut s = Scanner::new(cfg.clone(), Some(ct), enc, DATE, false);
    let mut n = 0;
    for c in body.chunks(chunk) {
        if s.feed(c).is_err() {
            return usize::MAX;
        }
        n += s.records().len();
        s.clear_records();
    }
    if s.finish().is_err() {
        return usize::MAX;
    }
    n + s.records().len()
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
    format!("cpu: {} | simd: {}", field("model name"), simd.join(" "))
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
    let json = gen_json();
    let ndjson = gen_ndjson();
    let csv = gen_csv();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&json);
    let gz = gz.finish().unwrap_or_default();
    // Sanity: every customer is found.
    assert!(scan(&cfg, "application/json", None, &json, 16 * 1024) > 1000);
    assert!(scan(&cfg, "application/json", Some("gzip"), &gz, 16 * 1024) > 1000);

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
    g.throughput(Throughput::Bytes(json.len() as u64));
    let bare = Arc::new(InspectConfig::for_tests(&["customer_id"], &[], &[]));
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
    g.finish();
}

/// `INSPECT_ONCE=<json|ndjson|csv|bare> INSPECT_REPEAT=<n>`: scan that body `n` times and exit,
/// for instruction counts under `valgrind --tool=callgrind` (repeatable on a loaded machine,
/// unlike time): the difference between two repeat counts is the cost of the scans alone. It
/// also prints the best and median MB per CPU-second of five batches of the repetitions.
fn once(what: &str) {
    let n: usize = std::env::var("INSPECT_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cfg = Arc::new(InspectConfig::default());
    let bare = Arc::new(InspectConfig::for_tests(&["customer_id"], &[], &[]));
    let (cfg, ct, body) = match what {
        "ndjson" => (&cfg, "application/x-ndjson", gen_ndjson()),
        "csv" => (&cfg, "text/csv", gen_csv()),
        "bare" => (&bare, "application/json", gen_json()),
        _ => (&cfg, "application/json", gen_json()),
    };
    // Batches of `n / 5` scans: the thread's CPU time moves in scheduler ticks.
    let batch = (n / 5).max(1);
    let mut records = 0;
    let mut rates = Vec::new();
    for _ in 0..n.div_ceil(batch) {
        let t = thread_cpu_ns();
        for _ in 0..batch {
            records += scan(cfg, ct, None, black_box(&body), 64 * 1024);
        }
        let secs = (thread_cpu_ns() - t).max(1) as f64 / 1e9;
        rates.push((body.len() * batch) as f64 / secs / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{what}: {} bytes x {n}: {records} records; MB per CPU-second best {:.0}, median {:.0}",
        body.len(),
        rates.last().copied().unwrap_or(0.0),
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    );
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

//! The audit trail: one JSON line per decision on an overseas request (SPEC §6) — never an
//! identifier — written by a background task ([`sink`]) to `gate.audit_log` (or stdout),
//! buffered and flushed at least every second and on shutdown; the file is reopened on
//! `SIGHUP` ([`Audit::reopen`]) so that logrotate can move it. The most recent decisions are
//! also kept in memory for `GET /v1/decisions`, and each decision is published on a bounded
//! broadcast feed ([`Audit::subscribe`]) for `GET /v1/decisions/stream`.

mod line;
mod sink;

use crate::policy::{Decision, Mechanism, Reason};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many recent decisions `/v1/decisions` can return.
pub const RECENT: usize = 1000;

/// How many decisions the live feed holds for its slowest subscriber; one that falls further
/// behind loses the oldest ones ([`broadcast::error::RecvError::Lagged`]).
pub const FEED_CAPACITY: usize = 1024;

/// A decision as published on the live feed: its sequence number (1 for the process's first
/// decision) and the record, whose JSON is made once for every subscriber.
#[derive(Debug)]
pub struct Published {
    /// The decision's number in this process, in the order decisions were recorded.
    pub seq: u64,
    /// The audit record (no identifier; the path redacted).
    pub record: Arc<AuditRecord>,
    json: OnceLock<bytes::Bytes>,
}

impl Published {
    /// Decision number `seq`, `record`.
    pub fn new(seq: u64, record: Arc<AuditRecord>) -> Self {
        Published {
            seq,
            record,
            json: OnceLock::new(),
        }
    }

    /// The record as one line of compact JSON (made by the first subscriber that asks).
    pub fn json(&self) -> &bytes::Bytes {
        self.json.get_or_init(|| {
            let mut out = Vec::with_capacity(512);
            line::write(&self.record, &mut out);
            bytes::Bytes::from(out)
        })
    }
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the request arrived; written as RFC 3339 in UTC with milliseconds.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// The request id (passed or created).
    pub request_id: String,
    /// The client's address.
    #[serde(serialize_with = "ser_display")]
    pub client: SocketAddr,
    /// The sending service: a declared client's name; `None` is written `unidentified`
    /// (SPEC §2).
    #[serde(serialize_with = "ser_client_name")]
    pub client_name: Option<Arc<str>>,
    /// How the client was identified: `certificate`, `token`, `address`, `icap`, or null.
    pub identified_by: Option<&'static str>,
    /// The listener the request came through: `proxy`, or `icap` (a request an ICAP client
    /// such as Squid passed to the gate's REQMOD service).
    pub origin: &'static str,
    /// Destination name (or `unknown`).
    pub destination: String,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: String,
    /// Path without query, with segments that look like identifiers redacted.
    pub path: String,
    /// `allow`, `block` or `would_block`.
    pub decision: Decision,
    /// The reason code.
    pub reason: Reason,
    /// The mechanism the counts required.
    pub required_mechanism: Mechanism,
    /// The crossed threshold, if any.
    pub threshold: Option<&'static str>,
    /// Subjects counted for the first time in the window by this request.
    pub new_subjects: u64,
    /// Subjects counted as sensitive for the first time by this request.
    pub new_sensitive_subjects: u64,
    /// Entity counts after the request.
    pub entity_subjects: u64,
    /// Entity sensitive counts after the request.
    pub entity_sensitive_subjects: u64,
    /// The approval relied on.
    pub approval: Option<String>,
    /// The important-data rule that matched (by path or field), for the filing.
    pub important_data_rule: Option<String>,
    /// The PI categories the request's subjects carried (SPEC §3 names), for the filing.
    pub categories: Vec<&'static str>,
    /// Request body bytes forwarded upstream.
    pub bytes: u64,
    /// WebSocket messages judged on the connection (absent for other requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
}

impl AuditRecord {
    /// A record with the request's identity filled in and everything else empty.
    pub fn new(
        request_id: &str,
        client: SocketAddr,
        destination: &str,
        method: &str,
        path: &str,
    ) -> Self {
        AuditRecord {
            time: SystemTime::now(),
            request_id: request_id.to_owned(),
            client,
            client_name: None,
            identified_by: None,
            origin: "proxy",
            destination: destination.to_owned(),
            method: method.to_owned(),
            path: crate::redact::path(path),
            decision: Decision::Allow,
            reason: Reason::Allowed,
            required_mechanism: Mechanism::None,
            threshold: None,
            new_subjects: 0,
            new_sensitive_subjects: 0,
            entity_subjects: 0,
            entity_sensitive_subjects: 0,
            approval: None,
            important_data_rule: None,
            categories: Vec::new(),
            bytes: 0,
            messages: None,
        }
    }
}

fn ser_client_name<S: serde::Serializer>(n: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_deref().unwrap_or(crate::config::UNIDENTIFIED))
}

impl AuditRecord {
    /// The client's name as written (`unidentified` when none).
    pub fn client_name(&self) -> &str {
        self.client_name
            .as_deref()
            .unwrap_or(crate::config::UNIDENTIFIED)
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let mut buf = [0u8; 24];
    match fmt_rfc3339(t, &mut buf) {
        Some(s) => s.to_owned(),
        None => rfc3339_slow(t),
    }
}

/// [`rfc3339`] through the `time` crate: for the instants the fast path does not cover.
fn rfc3339_slow(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt).unwrap_or_default()
}

/// Formats `t` as `YYYY-MM-DDThh:mm:ss.mmmZ` into `buf` without allocating (one per audit
/// line); `None` before 1970 or after 9999, which [`rfc3339_slow`] formats.
fn fmt_rfc3339(t: SystemTime, buf: &mut [u8; 24]) -> Option<&str> {
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days(secs / 86_400);
    if y > 9999 {
        return None;
    }
    let sod = secs % 86_400;
    let put = |buf: &mut [u8; 24], at: usize, v: u64, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(buf, 0, y, 4);
    put(buf, 5, m, 2);
    put(buf, 8, day, 2);
    put(buf, 11, sod / 3600, 2);
    put(buf, 14, sod / 60 % 60, 2);
    put(buf, 17, sod % 60, 2);
    put(buf, 20, u64::from(d.subsec_millis()), 3);
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[i] = c;
    }
    std::str::from_utf8(buf).ok()
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 24];
    match fmt_rfc3339(*t, &mut buf) {
        Some(v) => s.serialize_str(v),
        None => s.serialize_str(&rfc3339_slow(*t)),
    }
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The audit handle the request path uses: cheap to clone.
#[derive(Clone, Debug)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    recent: Arc<Mutex<Recent>>,
    feed: broadcast::Sender<Arc<Published>>,
}

/// The recent decisions and the sequence number of the last one.
#[derive(Debug)]
struct Recent {
    queue: VecDeque<Arc<AuditRecord>>,
    seq: u64,
}

#[derive(Debug)]
enum Msg {
    Record(Arc<AuditRecord>),
    Flush(oneshot::Sender<()>),
    Reopen(oneshot::Sender<Result<(), String>>),
}

impl Audit {
    /// Starts the writer for `path` (stdout when `None`).
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn start(path: Option<PathBuf>) -> std::io::Result<Audit> {
        let out: Box<dyn Write + Send> = match &path {
            Some(p) => Box::new(sink::open(p)?),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel(65_536);
        tokio::spawn(sink::write_loop(rx, sink::Writer::new(out, path)));
        Ok(Audit {
            tx,
            recent: Arc::new(Mutex::new(Recent {
                queue: VecDeque::with_capacity(RECENT),
                seq: 0,
            })),
            feed: broadcast::channel(FEED_CAPACITY).0,
        })
    }

    /// Keeps `rec` among the recent decisions and publishes it on the live feed. Under the
    /// lock, so that sequence numbers follow the feed's order. Without subscribers the feed
    /// costs one uncontended lock and no allocation.
    fn remember(&self, rec: &Arc<AuditRecord>) {
        if let Ok(mut r) = self.recent.lock() {
            if r.queue.len() == RECENT {
                r.queue.pop_front();
            }
            r.queue.push_back(rec.clone());
            r.seq += 1;
            if self.feed.receiver_count() > 0 {
                let _ = self.feed.send(Arc::new(Published::new(r.seq, rec.clone())));
            }
        }
    }

    /// A receiver of every decision recorded from now on. It holds at most
    /// [`FEED_CAPACITY`] decisions it has not read; beyond that it lags and loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.feed.subscribe()
    }

    /// Records a decision (waits only when the writer is 65,536 lines behind).
    pub async fn record(&self, rec: AuditRecord) {
        let rec = Arc::new(rec);
        self.remember(&rec);
        if self.tx.send(Msg::Record(rec)).await.is_err() {
            tracing::error!("audit writer stopped; decision not written");
        }
    }

    /// Records a decision from synchronous code: queued at once, or by a task when the writer
    /// is far behind.
    pub fn record_now(&self, rec: AuditRecord) {
        let rec = Arc::new(rec);
        self.remember(&rec);
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(Msg::Record(rec)) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Waits until every line recorded so far is written and flushed (e.g. at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Reopens the audit file at its configured path (after logrotate moved it): every line
    /// recorded before this call is in the old file, every line after it in the new one.
    /// Nothing to do on stdout.
    ///
    /// # Errors
    /// When the file cannot be opened (the old one stays in use).
    pub async fn reopen(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Reopen(tx)).await.is_err() {
            return Err("audit writer stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("audit writer stopped".into()))
    }

    /// The most recent decisions, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Arc<AuditRecord>> {
        match self.recent.lock() {
            Ok(r) => r.queue.iter().rev().take(limit).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_written_and_flushed_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::start(Some(path.clone())).unwrap();
        for i in 0..3 {
            let mut r = AuditRecord::new(
                &format!("r{i}"),
                "127.0.0.1:1".parse().unwrap(),
                "eu",
                "POST",
                "/x",
            );
            r.new_subjects = i;
            audit.record(r).await;
        }
        assert_eq!(audit.recent(2).len(), 2);
        assert_eq!(audit.recent(2)[0].request_id, "r2");
        audit.flush().await;
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["destination"], "eu");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["client"], "127.0.0.1:1");
    }

    #[tokio::test]
    async fn decisions_are_published_in_order_to_subscribers_only() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::start(Some(dir.path().join("audit.jsonl"))).unwrap();
        let rec = |id: &str| AuditRecord::new(id, "127.0.0.1:1".parse().unwrap(), "eu", "GET", "/");
        // Before anyone subscribes nothing is queued for the feed.
        audit.record(rec("before")).await;
        let mut rx = audit.subscribe();
        audit.record(rec("a")).await;
        audit.record_now(rec("b"));
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.seq, a.record.request_id.as_str()), (2, "a"));
        assert_eq!((b.seq, b.record.request_id.as_str()), (3, "b"));
        assert!(rx.is_empty());
        let v: serde_json::Value = serde_json::from_slice(b.json()).unwrap();
        assert_eq!(v["request_id"], "b");
        assert!(!b.json().contains(&b'\n'));
        assert_eq!(audit.recent(10).len(), 3);
    }

    /// The allocation-free formatter agrees with the `time` crate's over instants from 1970
    /// to 9999, day boundaries, leap days and every millisecond digit included.
    #[test]
    fn the_fast_timestamp_agrees_with_the_time_crate() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let max = 253_402_300_799_999u64; // 9999-12-31T23:59:59.999Z, in ms
        let mut instants: Vec<u64> = vec![0, 1, 999, 86_399_999, 86_400_000, 951_782_400_000, max];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            instants.push(x % (max + 1));
        }
        for ms in instants {
            let t = UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_micros(ms % 1000);
            assert_eq!(rfc3339(t), rfc3339_slow(t), "{ms} ms");
        }
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59.000Z");
        let r = AuditRecord::new("r", "[::1]:8".parse().unwrap(), "eu", "GET", "/");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["time"], rfc3339_slow(r.time));
        assert_eq!(v["client"], "[::1]:8");
    }
}

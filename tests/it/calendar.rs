//! The calendar end to end, in process: the gate started through `app::start_with_clock` on a
//! clock the test moves (the shipped binary always runs on the wall clock). Across the
//! Asia/Shanghai new year, with no restart, the cac-2024 counting window starts again and an
//! approval whose last day was December 31 stops covering transfers.

use crate::harness::upstream::Upstream;
use crate::harness::{Dest, GateBuilder};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use transfer_gate::model::Clock;

/// A clock the test sets.
#[derive(Debug)]
struct SetClock(Mutex<SystemTime>);

impl SetClock {
    /// `rfc3339` as the current moment.
    fn at(rfc3339: &str) -> Arc<Self> {
        let c = Arc::new(SetClock(Mutex::new(SystemTime::UNIX_EPOCH)));
        c.set(rfc3339);
        c
    }

    fn set(&self, rfc3339: &str) {
        let t =
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .unwrap();
        *self.0.lock().unwrap() = SystemTime::from(t);
    }
}

impl Clock for SetClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

const CATEGORIES: &str = "[inspection.categories]\nhealth = [\"diagnosis\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_year_starts_a_window_and_ends_an_approval_without_a_restart() {
    let up = Upstream::http().await;
    let builder = GateBuilder::new()
        .entity("regime = \"cac-2024\"")
        .section(CATEGORIES)
        .approvals(
            "[[approval]]\nid = \"SC-2026\"\nmechanism = \"standard_contract\"\nstatus = \"active\"\ndestinations = [\"eu\"]\ncategories = [\"basic\", \"health\"]\nvalid_from = \"2026-01-01\"\nvalid_until = \"2026-12-31\"\n",
        )
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr));
    let path = builder.write(0, 0);
    let (cfg, _warnings) = transfer_gate::config::load(&path).unwrap();
    // 23:59 on December 31 in Shanghai.
    let clock = SetClock::at("2026-12-31T23:59:00+08:00");
    let (drain, _watch) = transfer_gate::shutdown::Drain::new();
    let running = transfer_gate::app::start_with_clock(cfg, &drain, clock.clone())
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", running.proxy_addr)).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = || async {
        admin
            .get(format!("http://{}/v1/status", running.admin_addr))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let send = |body: &'static str| {
        client
            .post("http://api.eu.test/v1/records")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // A sensitive record needs the standard contract (cac-2024): in force on its last day.
    let r = send(r#"{"user_id": 1, "diagnosis": "flu"}"#).await.unwrap();
    assert_eq!(r.status(), 200);
    let s = status().await;
    assert_eq!(s["entity_subjects"]["all"], 1, "{s}");

    // One minute later it is 2027 in Shanghai (still 2026 in UTC).
    clock.set("2027-01-01T00:00:30+08:00");
    let r = send(r#"{"user_id": 2, "diagnosis": "flu"}"#).await.unwrap();
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "approval_expired", "{v}");
    // The window started again: the 2026 subject no longer counts, and nothing was added.
    let s = status().await;
    assert_eq!(s["today"], "2027-01-01", "{s}");
    assert_eq!(s["window_start"], "2027-01-01", "{s}");
    assert_eq!(s["entity_subjects"]["all"], 0, "{s}");
    assert_eq!(s["approvals"][0]["state"], "expired", "{s}");
    // PI that needs no mechanism still goes, counted in the new window.
    let r = send(r#"{"user_id": 3}"#).await.unwrap();
    assert_eq!(r.status(), 200);
    let s = status().await;
    assert_eq!(s["entity_subjects"]["all"], 1, "{s}");
    assert_eq!(up.received().len(), 2);

    drain.trigger();
    tokio::time::timeout(Duration::from_secs(30), running.done)
        .await
        .expect("the gate drains after the trigger")
        .expect("the gate's task ends without a panic");
}

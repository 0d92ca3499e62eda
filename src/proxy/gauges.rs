//! The count gauges of SPEC §6, resolved per configuration: entity and destination counts,
//! threshold utilisation, the mechanism required now, approval expiry and remaining volume.
//! A reservation updates the gauges of the scopes it touched from its own outcome; a periodic
//! refresh (and every reload) recomputes them all from the ledger, which also covers approvals
//! never used and the turn of the year. A destination's series appear once it has counted
//! someone.

use super::enforce::Scopes;
use crate::config::Config;
use crate::ledger::{Ledger, ScopeId};
use crate::metrics::Metrics;
use crate::policy::Mechanism;
use crate::policy::{self, Counts, Threshold};
use prometheus::{Gauge, IntGauge, IntGaugeVec};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

#[derive(Debug)]
enum Target {
    Entity,
    /// A destination's two series, made when it first counts someone: a configuration of
    /// 100,000 destinations would otherwise export 200,000 series at zero (SPEC §6: labels
    /// bounded by use).
    Destination {
        vec: IntGaugeVec,
        name: Box<str>,
        series: OnceLock<(IntGauge, IntGauge)>,
    },
    Approval {
        all: Option<(IntGauge, u64)>,
        sensitive: Option<(IntGauge, u64)>,
    },
}

/// Pre-resolved gauge handles of one configuration.
#[derive(Debug)]
pub struct Gauges {
    targets: HashMap<ScopeId, Vec<Target>>,
    /// The counts last published per scope: reservations finish in any order, so a
    /// reservation's outcome only ever moves a gauge forward (counts only grow within a window);
    /// the periodic refresh from the ledger sets them as they are (the year turn lowers them).
    published: HashMap<ScopeId, std::sync::Mutex<Counts>>,
    entity_all: IntGauge,
    entity_sensitive: IntGauge,
    utilization: Vec<(Threshold, Gauge)>,
    mechanism: Vec<(Mechanism, IntGauge)>,
    regime: crate::model::Regime,
    ciio: bool,
    pi_processed: u64,
    scopes: Vec<ScopeId>,
}

/// End of the `valid_until` day in Asia/Shanghai, as Unix seconds.
pub fn expiry_timestamp(until: time::Date) -> f64 {
    let next = until.next_day().unwrap_or(until);
    let days = i64::from(next.to_julian_day()) - 2_440_588;
    (days * 86_400 - crate::model::SHANGHAI_OFFSET_SECONDS) as f64
}

impl Gauges {
    /// Resolves every series for `cfg` (old label sets of a previous config are dropped).
    pub fn build(m: &Metrics, cfg: &Config, scopes: &Scopes) -> Gauges {
        m.destination_subjects.reset();
        m.threshold_utilization.reset();
        m.approval_expiry.reset();
        m.approval_remaining.reset();
        m.approval_max.reset();
        let mut targets: HashMap<ScopeId, Vec<Target>> = HashMap::new();
        targets
            .entry(scopes.entity)
            .or_default()
            .push(Target::Entity);
        for (i, d) in cfg.destinations.iter().enumerate() {
            let t = Target::Destination {
                vec: m.destination_subjects.clone(),
                name: d.name.as_str().into(),
                series: OnceLock::new(),
            };
            // An exempt destination's transfers live in its exempt scope.
            let sid = scopes.exempt[i].unwrap_or(scopes.destination[i]);
            targets.entry(sid).or_default().push(t);
        }
        for (i, a) in cfg.approvals.iter().enumerate() {
            let until = a.valid_until.map(expiry_timestamp).unwrap_or(f64::INFINITY);
            // Only approvals in force can expire in a way that matters to ops; a pending or
            // revoked one would make the expiry alerts fire for nothing.
            let active = a.status == crate::config::ApprovalStatus::Active;
            for d in a.destinations.iter().filter(|_| active) {
                m.approval_expiry
                    .with_label_values(&[a.id.as_str(), d.as_str(), a.mechanism.as_str()])
                    .set(until);
            }
            let all = a.max_subjects.map(|max| {
                (
                    m.approval_remaining
                        .with_label_values(&[a.id.as_str(), "all"]),
                    max,
                )
            });
            let sensitive = a.max_sensitive_subjects.map(|max| {
                (
                    m.approval_remaining
                        .with_label_values(&[a.id.as_str(), "sensitive"]),
                    max,
                )
            });
            if let Some((g, max)) = &all {
                g.set(*max as i64);
                m.approval_max
                    .with_label_values(&[a.id.as_str(), "all"])
                    .set(*max as i64);
            }
            if let Some((g, max)) = &sensitive {
                g.set(*max as i64);
                m.approval_max
                    .with_label_values(&[a.id.as_str(), "sensitive"])
                    .set(*max as i64);
            }
            targets
                .entry(scopes.approval[i])
                .or_default()
                .push(Target::Approval { all, sensitive });
        }
        let e = &cfg.entity;
        let utilization = policy::utilization(e.regime, e.pi_subjects_processed, Counts::default())
            .into_iter()
            .map(|(t, _, _)| (t, m.threshold_utilization.with_label_values(&[t.as_str()])))
            .collect();
        let mechanism = Mechanism::ALL
            .into_iter()
            .map(|x| (x, m.required_mechanism.with_label_values(&[x.as_str()])))
            .collect();
        let g = Gauges {
            scopes: targets.keys().copied().collect(),
            published: targets
                .keys()
                .map(|k| (*k, std::sync::Mutex::new(Counts::default())))
                .collect(),
            targets,
            entity_all: m.entity_subjects.with_label_values(&["all"]),
            entity_sensitive: m.entity_subjects.with_label_values(&["sensitive"]),
            utilization,
            mechanism,
            regime: e.regime,
            ciio: e.ciio,
            pi_processed: e.pi_subjects_processed,
        };
        g.show(scopes.entity, Counts::default());
        g
    }

    /// Publishes counts a reservation reached: never moves a gauge backwards.
    pub fn advance(&self, sid: ScopeId, c: Counts) {
        let Some(m) = self.published.get(&sid) else {
            return;
        };
        let mut cur = m.lock().unwrap_or_else(|p| p.into_inner());
        let next = Counts {
            all: cur.all.max(c.all),
            sensitive: cur.sensitive.max(c.sensitive),
        };
        if next != *cur {
            *cur = next;
            self.show(sid, next);
        }
    }

    /// Publishes the ledger's current window counts of scope `sid` as they are.
    pub fn set(&self, sid: ScopeId, c: Counts) {
        let Some(m) = self.published.get(&sid) else {
            return;
        };
        let mut cur = m.lock().unwrap_or_else(|p| p.into_inner());
        *cur = c;
        self.show(sid, c);
    }

    fn show(&self, sid: ScopeId, c: Counts) {
        let Some(ts) = self.targets.get(&sid) else {
            return;
        };
        for t in ts {
            match t {
                Target::Entity => {
                    self.entity_all.set(c.all as i64);
                    self.entity_sensitive.set(c.sensitive as i64);
                    for ((_, _, ratio), (_, g)) in
                        policy::utilization(self.regime, self.pi_processed, c)
                            .iter()
                            .zip(&self.utilization)
                    {
                        g.set(*ratio);
                    }
                    let (need, _) =
                        policy::required(self.regime, self.ciio, self.pi_processed, c, false);
                    for (m, g) in &self.mechanism {
                        g.set(i64::from(*m == need));
                    }
                }
                Target::Destination { vec, name, series } => {
                    if c.all == 0 && c.sensitive == 0 && series.get().is_none() {
                        continue;
                    }
                    let (all, sensitive) = series.get_or_init(|| {
                        (
                            vec.with_label_values(&[&**name, "all"]),
                            vec.with_label_values(&[&**name, "sensitive"]),
                        )
                    });
                    all.set(c.all as i64);
                    sensitive.set(c.sensitive as i64);
                }
                Target::Approval { all, sensitive } => {
                    if let Some((g, max)) = all {
                        g.set(max.saturating_sub(c.all) as i64);
                    }
                    if let Some((g, max)) = sensitive {
                        g.set(max.saturating_sub(c.sensitive) as i64);
                    }
                }
            }
        }
    }

    /// Recomputes every gauge from the ledger's window counts.
    pub async fn refresh(&self, ledger: &dyn Ledger, now: SystemTime) {
        for sid in &self.scopes {
            match ledger.counts(*sid, self.regime, now).await {
                Ok(c) => self.set(
                    *sid,
                    Counts {
                        all: c.all,
                        sensitive: c.sensitive,
                    },
                ),
                Err(e) => tracing::warn!(error = %e, "ledger counts unavailable for the gauges"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expiry_timestamp;
    use time::macros::date;

    #[test]
    fn expiry_is_the_end_of_the_day_in_shanghai() {
        // 2028-02-29 ends at 2028-03-01T00:00+08:00 = 2028-02-29T16:00Z = 1835452800.
        assert_eq!(expiry_timestamp(date!(2028 - 02 - 29)), 1_835_452_800.0);
    }
}

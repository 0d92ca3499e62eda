//! The Prometheus families of SPEC §6. Their names are part of the product contract and live
//! here as constants. `main` builds the [`prometheus::Registry`] and passes it in; nothing here
//! is global. Label values come from the configuration and from fixed enums, never from request
//! data, so the number of series stays bounded.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `transfer_gate_entity_subjects`
pub const ENTITY_SUBJECTS: &str = "transfer_gate_entity_subjects";
/// `transfer_gate_destination_subjects`
pub const DESTINATION_SUBJECTS: &str = "transfer_gate_destination_subjects";
/// `transfer_gate_threshold_utilization_ratio`
pub const THRESHOLD_UTILIZATION: &str = "transfer_gate_threshold_utilization_ratio";
/// `transfer_gate_required_mechanism`
pub const REQUIRED_MECHANISM: &str = "transfer_gate_required_mechanism";
/// `transfer_gate_decisions_total`
pub const DECISIONS_TOTAL: &str = "transfer_gate_decisions_total";
/// `transfer_gate_records_total`
pub const RECORDS_TOTAL: &str = "transfer_gate_records_total";
/// `transfer_gate_bytes_total`
pub const BYTES_TOTAL: &str = "transfer_gate_bytes_total";
/// `transfer_gate_proxy_tls_handshake_errors_total`
pub const PROXY_TLS_HANDSHAKE_ERRORS: &str = "transfer_gate_proxy_tls_handshake_errors_total";
/// `transfer_gate_approval_expiry_timestamp_seconds`
pub const APPROVAL_EXPIRY: &str = "transfer_gate_approval_expiry_timestamp_seconds";
/// `transfer_gate_approval_remaining_subjects`
pub const APPROVAL_REMAINING: &str = "transfer_gate_approval_remaining_subjects";
/// `transfer_gate_request_duration_seconds`
pub const REQUEST_DURATION: &str = "transfer_gate_request_duration_seconds";
/// Buckets of `transfer_gate_added_seconds`: 50 µs to 10 s.
const ADDED_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A response extension set where an upstream's response is forwarded: how long the gate waited
/// for the upstream's response head, counted from the moment the request body had been sent in
/// full (or, when the head came before the body ended, from handing the request head to the
/// upstream connection). Not part of what the client receives.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamWait(pub std::time::Duration);

/// `transfer_gate_added_seconds`
pub const ADDED_SECONDS: &str = "transfer_gate_added_seconds";
/// `transfer_gate_ledger_commit_seconds`
pub const LEDGER_COMMIT: &str = "transfer_gate_ledger_commit_seconds";
/// `transfer_gate_ledger_errors_total`
pub const LEDGER_ERRORS: &str = "transfer_gate_ledger_errors_total";
/// `transfer_gate_ledger_losses_total` (not in the spec table; losses of the shared backend's
/// data detected by this replica: a Redis restart without the data, a flush, a failover)
pub const LEDGER_LOSSES: &str = "transfer_gate_ledger_losses_total";
/// `transfer_gate_ledger_reasserted_subjects_total` (not in the spec table; (scope, subject)
/// entries of this replica's journal re-asserted after losses)
pub const LEDGER_REASSERTED: &str = "transfer_gate_ledger_reasserted_subjects_total";
/// `transfer_gate_tunnels_total`
pub const TUNNELS_TOTAL: &str = "transfer_gate_tunnels_total";
/// `transfer_gate_config_info`
pub const CONFIG_INFO: &str = "transfer_gate_config_info";
/// `transfer_gate_approval_max_subjects` (not in the spec table; the declared volume, for the
/// remaining-volume alert)
pub const APPROVAL_MAX: &str = "transfer_gate_approval_max_subjects";
/// `transfer_gate_ledger_up`
pub const LEDGER_UP: &str = "transfer_gate_ledger_up";
/// `transfer_gate_upstream_errors_total` (not in the spec table; 502/504 by kind)
pub const UPSTREAM_ERRORS: &str = "transfer_gate_upstream_errors_total";
/// `transfer_gate_tls_client_errors_total` (not in the spec table; failed or refused client
/// handshakes of intercepted connections: untrusted CA, pinning, missing or mismatched SNI)
pub const TLS_CLIENT_ERRORS: &str = "transfer_gate_tls_client_errors_total";

/// `transfer_gate_buffered_bytes` (not in the spec table; bytes held for requests against
/// `inspection.max_buffered_bytes`)
pub const BUFFERED_BYTES: &str = "transfer_gate_buffered_bytes";

/// Every family the gate exports. Cheap to clone (each family is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    /// Entity subject counts by class.
    pub entity_subjects: IntGaugeVec,
    /// Destination subject counts by destination and class.
    pub destination_subjects: IntGaugeVec,
    /// Count ÷ limit for each threshold of the regime.
    pub threshold_utilization: GaugeVec,
    /// 1 for the mechanism required now.
    pub required_mechanism: IntGaugeVec,
    /// Decisions by destination, decision, reason and client.
    pub decisions: IntCounterVec,
    /// Records by destination and category.
    pub records: IntCounterVec,
    /// Bytes by destination, direction and client.
    pub bytes: IntCounterVec,
    /// Failed handshakes on the TLS proxy listener by reason (`no_certificate`, `unknown_ca`,
    /// `other`).
    pub proxy_tls_handshake_errors: IntCounterVec,
    /// Approval expiry as a Unix timestamp.
    pub approval_expiry: GaugeVec,
    /// Remaining approved volume by approval and class.
    pub approval_remaining: IntGaugeVec,
    /// Request duration by decision.
    pub request_duration: HistogramVec,
    /// The time the gate adds to an exchange by decision (request duration minus the wait for
    /// the upstream's response head).
    pub added: HistogramVec,
    /// Ledger commit time by backend.
    pub ledger_commit: HistogramVec,
    /// Ledger errors by backend.
    pub ledger_errors: IntCounterVec,
    /// Losses of the backend's data detected, by backend.
    pub ledger_losses: IntCounterVec,
    /// Journal entries re-asserted after losses, by backend.
    pub ledger_reasserted: IntCounterVec,
    /// Tunnels opened by destination.
    pub tunnels: IntCounterVec,
    /// Constant 1 labelled with the config hash, regime and mode.
    pub config_info: IntGaugeVec,
    /// Declared approval volume by approval and class.
    pub approval_max: IntGaugeVec,
    /// 1 when the ledger backend is reachable and writable, else 0 (by backend).
    pub ledger_up: IntGaugeVec,
    /// Upstream failures by destination and kind (`unreachable`, `timeout`).
    pub upstream_errors: IntCounterVec,
    /// Failed client handshakes of intercepted connections, by destination.
    pub tls_client_errors: IntCounterVec,
    /// Bytes held for requests now, charged to `inspection.max_buffered_bytes`.
    pub buffered_bytes: IntGauge,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates every family and registers it in `registry`.
    ///
    /// # Errors
    /// When a family of the same name is already registered there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let commit_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let m = Metrics {
            entity_subjects: IntGaugeVec::new(
                opts(ENTITY_SUBJECTS, "Distinct data subjects sent abroad in the counting window, all overseas destinations together."),
                &["class"],
            )?,
            destination_subjects: IntGaugeVec::new(
                opts(DESTINATION_SUBJECTS, "Distinct data subjects sent to a destination in the counting window."),
                &["destination", "class"],
            )?,
            threshold_utilization: GaugeVec::new(
                opts(THRESHOLD_UTILIZATION, "Count divided by the limit of each legal threshold of the configured regime."),
                &["threshold"],
            )?,
            required_mechanism: IntGaugeVec::new(
                opts(REQUIRED_MECHANISM, "1 for the cross-border mechanism the entity's counts require now."),
                &["mechanism"],
            )?,
            decisions: IntCounterVec::new(
                opts(DECISIONS_TOTAL, "Decisions taken by the gate."),
                &["destination", "decision", "reason", "client"],
            )?,
            records: IntCounterVec::new(
                opts(RECORDS_TOTAL, "Records with personal information forwarded, by category."),
                &["destination", "category"],
            )?,
            bytes: IntCounterVec::new(
                opts(BYTES_TOTAL, "Body bytes through the gate."),
                &["destination", "direction", "client"],
            )?,
            proxy_tls_handshake_errors: IntCounterVec::new(
                opts(PROXY_TLS_HANDSHAKE_ERRORS, "Failed handshakes on the TLS proxy listener, by reason."),
                &["reason"],
            )?,
            approval_expiry: GaugeVec::new(
                opts(APPROVAL_EXPIRY, "End of an approval's validity (Unix seconds, end of the valid_until day in Asia/Shanghai)."),
                &["approval", "destination", "mechanism"],
            )?,
            approval_remaining: IntGaugeVec::new(
                opts(APPROVAL_REMAINING, "Data subjects an approval's declared volume still allows."),
                &["approval", "class"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(REQUEST_DURATION, "Time from request head to response head.")
                    .buckets(latency_buckets),
                &["decision"],
            )?,
            added: HistogramVec::new(
                HistogramOpts::new(
                    ADDED_SECONDS,
                    "Time the gate adds to an exchange: request head read to response head sent, minus the wait for the upstream's response head after the body was sent.",
                )
                .buckets(ADDED_BUCKETS.to_vec()),
                &["decision"],
            )?,
            ledger_commit: HistogramVec::new(
                HistogramOpts::new(LEDGER_COMMIT, "Time to durably reserve a request's new subjects.")
                    .buckets(commit_buckets),
                &["backend"],
            )?,
            ledger_errors: IntCounterVec::new(
                opts(LEDGER_ERRORS, "Ledger operations that failed (each one refused a transfer with 503)."),
                &["backend"],
            )?,
            ledger_losses: IntCounterVec::new(
                opts(LEDGER_LOSSES, "Losses of the shared ledger's data detected by this replica (Redis restarted empty, flushed, failed over, a Cluster node replaced); PI is refused until its journal is re-asserted."),
                &["backend"],
            )?,
            ledger_reasserted: IntCounterVec::new(
                opts(LEDGER_REASSERTED, "(scope, subject) entries of this replica's journal re-asserted into the shared ledger after losses."),
                &["backend"],
            )?,
            tunnels: IntCounterVec::new(
                opts(TUNNELS_TOTAL, "CONNECT tunnels opened without inspection."),
                &["destination"],
            )?,
            config_info: IntGaugeVec::new(
                opts(CONFIG_INFO, "The loaded configuration."),
                &["sha256", "regime", "mode"],
            )?,
            approval_max: IntGaugeVec::new(
                opts(APPROVAL_MAX, "Data subjects an approval's declared volume allows in total."),
                &["approval", "class"],
            )?,
            ledger_up: IntGaugeVec::new(
                opts(LEDGER_UP, "1 when the ledger backend is reachable and writable, 0 when transfers with personal information get 503 ledger_unavailable."),
                &["backend"],
            )?,
            upstream_errors: IntCounterVec::new(
                opts(UPSTREAM_ERRORS, "Upstream exchanges that failed, by kind."),
                &["destination", "kind"],
            )?,
            buffered_bytes: IntGauge::with_opts(opts(
                BUFFERED_BYTES,
                "Bytes held for requests before release (whole-read bodies, unjudged records, decoder windows), against inspection.max_buffered_bytes.",
            ))?,
            tls_client_errors: IntCounterVec::new(
                opts(TLS_CLIENT_ERRORS, "Client TLS handshakes of intercepted CONNECTs that failed or were refused (nothing was forwarded)."),
                &["destination"],
            )?,
            registry: registry.clone(),
        };
        registry.register(Box::new(m.entity_subjects.clone()))?;
        registry.register(Box::new(m.destination_subjects.clone()))?;
        registry.register(Box::new(m.threshold_utilization.clone()))?;
        registry.register(Box::new(m.required_mechanism.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.proxy_tls_handshake_errors.clone()))?;
        registry.register(Box::new(m.approval_expiry.clone()))?;
        registry.register(Box::new(m.approval_remaining.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.added.clone()))?;
        registry.register(Box::new(m.ledger_commit.clone()))?;
        registry.register(Box::new(m.ledger_errors.clone()))?;
        registry.register(Box::new(m.ledger_losses.clone()))?;
        registry.register(Box::new(m.ledger_reasserted.clone()))?;
        registry.register(Box::new(m.tunnels.clone()))?;
        registry.register(Box::new(m.config_info.clone()))?;
        registry.register(Box::new(m.upstream_errors.clone()))?;
        registry.register(Box::new(m.approval_max.clone()))?;
        registry.register(Box::new(m.ledger_up.clone()))?;
        registry.register(Box::new(m.tls_client_errors.clone()))?;
        registry.register(Box::new(m.buffered_bytes.clone()))?;
        Ok(m)
    }

    /// The request duration histogram for one decision value.
    pub fn duration(&self, decision: &str) -> Histogram {
        self.request_duration.with_label_values(&[decision])
    }

    /// Observes one finished exchange: `transfer_gate_request_duration_seconds` gets all of
    /// `elapsed`, `transfer_gate_added_seconds` gets `elapsed` minus the [`UpstreamWait`] that
    /// the forwarding code left in the response's extensions (none for a response the gate made
    /// itself, such as a refusal: the whole duration is added).
    pub fn observe_exchange<B>(
        &self,
        decision: &str,
        elapsed: std::time::Duration,
        resp: &http::Response<B>,
    ) {
        self.duration(decision).observe(elapsed.as_secs_f64());
        let wait = resp
            .extensions()
            .get::<UpstreamWait>()
            .map_or(std::time::Duration::ZERO, |w| w.0);
        self.added
            .with_label_values(&[decision])
            .observe(elapsed.saturating_sub(wait).as_secs_f64());
    }

    /// Renders every registered family in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on I/O; a family with inconsistent data is skipped.
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_family_is_rendered() {
        let m = Metrics::register(&Registry::new()).unwrap();
        m.entity_subjects.with_label_values(&["all"]).set(3);
        m.destination_subjects
            .with_label_values(&["eu", "all"])
            .set(3);
        m.threshold_utilization
            .with_label_values(&["subjects_100000"])
            .set(0.5);
        m.required_mechanism.with_label_values(&["none"]).set(1);
        m.decisions
            .with_label_values(&["eu", "allow", "allowed", "billing"])
            .inc();
        m.records.with_label_values(&["eu", "basic"]).inc();
        m.bytes
            .with_label_values(&["eu", "upstream", "unidentified"])
            .inc();
        m.proxy_tls_handshake_errors
            .with_label_values(&["unknown_ca"])
            .inc();
        m.approval_expiry
            .with_label_values(&["A", "eu", "standard_contract"])
            .set(1.0);
        m.approval_remaining.with_label_values(&["A", "all"]).set(1);
        m.duration("allow").observe(0.001);
        m.added.with_label_values(&["allow"]).observe(0.001);
        m.ledger_commit.with_label_values(&["local"]).observe(0.001);
        m.ledger_errors.with_label_values(&["local"]).inc();
        m.ledger_up.with_label_values(&["local"]).set(1);
        m.tunnels.with_label_values(&["domestic"]).inc();
        m.tls_client_errors.with_label_values(&["eu"]).inc();
        m.config_info
            .with_label_values(&["abc", "cac-2024", "enforce"])
            .set(1);
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            ENTITY_SUBJECTS,
            DESTINATION_SUBJECTS,
            THRESHOLD_UTILIZATION,
            REQUIRED_MECHANISM,
            DECISIONS_TOTAL,
            PROXY_TLS_HANDSHAKE_ERRORS,
            RECORDS_TOTAL,
            BYTES_TOTAL,
            APPROVAL_EXPIRY,
            APPROVAL_REMAINING,
            REQUEST_DURATION,
            ADDED_SECONDS,
            LEDGER_COMMIT,
            LEDGER_ERRORS,
            LEDGER_UP,
            TUNNELS_TOTAL,
            CONFIG_INFO,
            TLS_CLIENT_ERRORS,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}

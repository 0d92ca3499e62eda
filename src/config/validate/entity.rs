//! `[entity]`: who transfers (name, regime, CIIO status, subjects processed).

use crate::config::raw::RawEntity;
use crate::config::{Diagnostics, Entity};
use crate::model::Regime;

/// Validates `[entity]`.
pub(super) fn validate(file: &str, e: RawEntity, d: &mut Diagnostics) -> Entity {
    let regime = e.regime.parse::<Regime>().unwrap_or_else(|_| {
        d.error(
            file,
            "entity.regime",
            format!("`{}` is not one of: cac-2024, cac-2022", e.regime),
        );
        Regime::Cac2024
    });
    if e.name.trim().is_empty() {
        d.error(file, "entity.name", "must not be empty");
    }
    Entity {
        name: e.name,
        regime,
        ciio: e.ciio,
        pi_subjects_processed: e.pi_subjects_processed,
    }
}

//! The destination and approval register the enforcement and approval tests share: one
//! destination `eu` and `[[approval]]` blocks for it.

use super::Dest;
use std::net::SocketAddr;

/// Two category rules: `diagnosis` is health (sensitive), `phone` is contact.
pub const CATEGORIES: &str =
    "[inspection.categories]\nhealth = [\"diagnosis\"]\ncontact = [\"phone\"]";

/// The destination `eu` (`api.eu.test`), sent to `addr`.
pub fn eu(addr: SocketAddr) -> Dest {
    Dest::new("eu", "api.eu.test").connect_to(addr)
}

/// One `[[approval]]` for `eu`, active, valid from 2024 to `until`, with `extra` lines.
pub fn approval(id: &str, mechanism: &str, cats: &str, until: &str, extra: &str) -> String {
    format!(
        "[[approval]]\nid = \"{id}\"\nmechanism = \"{mechanism}\"\nstatus = \"active\"\ndestinations = [\"eu\"]\ncategories = [{cats}]\nvalid_from = \"2024-01-01\"\nvalid_until = \"{until}\"\n{extra}\n"
    )
}

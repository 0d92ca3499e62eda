//! The Markdown rendering of the report: the data-flow inventory as headings and tables, for
//! pasting into an assessment or filing document.

use super::{counts, list, text};
use serde_json::Value;
use std::fmt::Write;

/// Escapes a table cell (pipes and line breaks).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as Markdown.
pub fn render(doc: &Value) -> String {
    let mut o = String::new();
    let r = &doc["report"];
    let period = match (r["from"].as_str(), r["to"].as_str()) {
        (None, None) => "all months recorded".to_owned(),
        (f, t) => format!("{} to {}", f.unwrap_or("start"), t.unwrap_or("now")),
    };
    let _ = writeln!(
        o,
        "# Cross-border data-flow inventory — {}\n",
        cell(&text(&doc["entity"]))
    );
    let _ = writeln!(
        o,
        "Generated {} by transfer-gate. Regime `{}`, counting window since {} (today {}). Period: {period}.\n",
        text(&r["generated_at"]),
        text(&doc["regime"]),
        text(&doc["window_start"]),
        text(&doc["today"]),
    );
    let _ = writeln!(
        o,
        "Entity in the window: **{} subjects, {} sensitive**. Mechanism required now: **{}**{}.\n",
        text(&doc["entity_subjects"]["all"]),
        text(&doc["entity_subjects"]["sensitive"]),
        text(&doc["required_mechanism"]),
        doc["required_because"]
            .as_str()
            .map(|t| format!(" (threshold `{t}`)"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "> {}\n", text(&r["subjects_note"]));
    let _ = writeln!(o, "## Destinations\n");
    let _ = writeln!(
        o,
        "| destination | recipient | country | subjects (window) | sensitive (window) | approvals | notes |\n|---|---|---|---:|---:|---|---|"
    );
    for d in doc["destinations"].as_array().into_iter().flatten() {
        let mut notes = Vec::new();
        if let Some(e) = d["exemption"].as_str() {
            notes.push(format!("exempt: {e}"));
        }
        if d["sensitive"] == true {
            notes.push("declared sensitive".into());
        }
        if let Some(t) = d["tls"].as_str() {
            notes.push(format!("tls {t}"));
        }
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&text(&d["name"])),
            cell(&text(&d["recipient"])),
            cell(&text(&d["country"])),
            text(&d["subjects"]),
            text(&d["sensitive_subjects"]),
            cell(&list(&d["approvals"])),
            if notes.is_empty() {
                "-".into()
            } else {
                cell(&notes.join("; "))
            },
        );
    }
    for d in doc["destinations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\n### {} → {} ({})\n",
            cell(&text(&d["name"])),
            cell(&text(&d["recipient"])),
            cell(&text(&d["country"]))
        );
        let months = d["months"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if months.is_empty() {
            let _ = writeln!(o, "No personal information sent in the period.");
            continue;
        }
        let _ = writeln!(
            o,
            "| month | new subjects | new sensitive | categories (records) | blocked by reason | would block (observe) |\n|---|---:|---:|---|---|---|"
        );
        for m in months {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                text(&m["month"]),
                text(&m["subjects"]),
                text(&m["sensitive_subjects"]),
                cell(&counts(&m["records"])),
                cell(&counts(&m["blocked"])),
                cell(&counts(&m["would_block"])),
            );
        }
    }
    let unreg = doc["unregistered_blocked"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !unreg.is_empty() {
        let _ = writeln!(o, "\n### Refused transfers to unregistered hosts\n\n| month | refused by reason |\n|---|---|");
        for m in unreg {
            let _ = writeln!(
                o,
                "| {} | {} |",
                text(&m["month"]),
                cell(&counts(&m["blocked"]))
            );
        }
    }
    let _ = writeln!(
        o,
        "\n## Entity per month\n\n| month | new subjects | new sensitive |\n|---|---:|---:|"
    );
    for m in doc["entity_months"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            text(&m["month"]),
            text(&m["subjects"]),
            text(&m["sensitive_subjects"])
        );
    }
    let _ = writeln!(
        o,
        "\n## Internal systems → destinations\n\n| system (client) | owner | destination | forwarded | refused | bytes | new subjects | new sensitive |\n|---|---|---|---:|---:|---:|---:|---:|"
    );
    for c in doc["clients"].as_array().into_iter().flatten() {
        for d in c["destinations"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&text(&c["name"])),
                cell(&text(&c["owner"])),
                cell(&text(&d["destination"])),
                text(&d["allowed"]),
                text(&d["refused"]),
                text(&d["bytes"]),
                text(&d["new_subjects"]),
                text(&d["new_sensitive_subjects"]),
            );
        }
    }
    let _ = writeln!(
        o,
        "\nA subject is attributed to the system that sent it to the destination first in the counting window."
    );
    let _ = writeln!(
        o,
        "\n## Approvals\n\n| id | mechanism | status | state | destinations | categories | valid from | valid until | days left | used / max subjects | used / max sensitive | reference |\n|---|---|---|---|---|---|---|---|---:|---|---|---|"
    );
    for a in doc["approvals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
            cell(&text(&a["id"])),
            text(&a["mechanism"]),
            text(&a["status"]),
            text(&a["state"]),
            cell(&list(&a["destinations"])),
            cell(&list(&a["categories"])),
            text(&a["valid_from"]),
            text(&a["valid_until"]),
            text(&a["days_to_expiry"]),
            text(&a["used_subjects"]),
            text(&a["max_subjects"]),
            text(&a["used_sensitive_subjects"]),
            text(&a["max_sensitive_subjects"]),
            cell(&text(&a["reference"])),
        );
    }
    let _ = writeln!(
        o,
        "\n_Categories and refusals are recorded since {}. {}_",
        text(&r["activity_since"]),
        text(&r["activity_note"])
    );
    o
}

//! The HTML rendering of the report: one self-contained file (inline CSS, inline SVG, no
//! script, no external asset) with the data-flow diagram — the entity on the left, an edge to
//! each destination labelled with recipient, country, subjects and sensitive subjects in the
//! window, and the mechanism or approval state the flow relies on — followed by the tables.

use super::{counts, list, text};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn t(v: &Value) -> String {
    esc(&text(v))
}

/// Escaped text cut to `n` characters (with `…`), so that it fits its box in the diagram.
fn fit(v: &Value, n: usize) -> String {
    let s = text(v);
    if s.chars().count() <= n {
        esc(&s)
    } else {
        esc(&format!("{}…", s.chars().take(n - 1).collect::<String>()))
    }
}

/// The report's approvals by id.
fn approvals_by_id(doc: &Value) -> HashMap<&str, &Value> {
    doc["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_str()?, a)))
        .collect()
}

/// How a destination's flow stands: (label, colour).
fn flow_state(doc: &Value, by_id: &HashMap<&str, &Value>, d: &Value) -> (String, &'static str) {
    if let Some(e) = d["exemption"].as_str() {
        return (format!("exempt: {e}"), "#2b6cb0");
    }
    let approvals: Vec<&Value> = d["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| by_id.get(id.as_str()?).copied())
        .collect();
    if let Some(a) = approvals.iter().find(|a| a["state"] == "in_force") {
        return (
            format!(
                "{} {} (in force until {})",
                text(&a["mechanism"]),
                text(&a["id"]),
                text(&a["valid_until"])
            ),
            "#2f855a",
        );
    }
    if let Some(a) = approvals.first() {
        return (
            format!(
                "{} {} ({})",
                text(&a["mechanism"]),
                text(&a["id"]),
                text(&a["state"])
            ),
            "#c53030",
        );
    }
    if d["subjects"].as_u64().unwrap_or(0) == 0 {
        return ("no PI sent; no approval".into(), "#718096");
    }
    (
        format!(
            "no approval (required now: {})",
            text(&doc["required_mechanism"])
        ),
        "#c53030",
    )
}

/// The SVG data-flow diagram.
pub fn diagram(doc: &Value) -> String {
    let dests: Vec<&Value> = doc["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // Internal systems (clients that sent anything in the period) → the company's gate →
    // destinations.
    let systems: Vec<&Value> = doc["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["destinations"].as_array().is_some_and(|d| !d.is_empty()))
        .collect();
    let row = 120;
    let crow = 76;
    let height = (dests.len().max(1) * row + 40).max(systems.len() * crow + 40) as i64;
    let width = 1400;
    let (ex, ey, ew, eh) = (330, height / 2 - 45, 240, 90);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg id="dataflow" xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="dataflow-title" width="100%" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">
<title id="dataflow-title">Data-flow diagram: {entity} to its overseas destinations</title>
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#4a5568"/></marker></defs>
<rect x="{ex}" y="{ey}" width="{ew}" height="{eh}" rx="10" fill="#edf2f7" stroke="#2d3748" stroke-width="2"/>
<text x="{cx}" y="{ty1}" text-anchor="middle" font-weight="bold">{short}</text>
<text x="{cx}" y="{ty2}" text-anchor="middle">mainland China · {regime}</text>
<text x="{cx}" y="{ty3}" text-anchor="middle">{all} subjects · {sens} sensitive</text>
"##,
        entity = t(&doc["entity"]),
        short = fit(&doc["entity"], 32),
        regime = t(&doc["regime"]),
        all = t(&doc["entity_subjects"]["all"]),
        sens = t(&doc["entity_subjects"]["sensitive"]),
        cx = ex + ew / 2,
        ty1 = ey + 28,
        ty2 = ey + 50,
        ty3 = ey + 72,
    );
    let (sx, sw, sh) = (20, 230, 60);
    for (i, c) in systems.iter().enumerate() {
        let y = 20 + (i * crow) as i64 + (crow as i64 - sh) / 2;
        let (sent, new): (u64, u64) =
            c["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .fold((0, 0), |(a, n), d| {
                    (
                        a + d["allowed"].as_u64().unwrap_or(0),
                        n + d["new_subjects"].as_u64().unwrap_or(0),
                    )
                });
        let _ = write!(
            s,
            r##"<g class="system" data-client="{name}">
<rect x="{sx}" y="{y}" width="{sw}" height="{sh}" rx="8" fill="#f0fff4" stroke="#2f855a" stroke-width="2"/>
<text x="{tx}" y="{t1}" text-anchor="middle" font-weight="bold">{name}</text>
<text x="{tx}" y="{t2}" text-anchor="middle" font-size="12">{owner}</text>
<text x="{tx}" y="{t3}" text-anchor="middle" font-size="11" fill="#4a5568">{sent} forwarded · {new} new subjects</text>
<path d="M {x1} {y1} C {c1} {y1}, {c2} {y2}, {x2} {y2}" fill="none" stroke="#2f855a" stroke-width="2" marker-end="url(#arrow)"/>
</g>
"##,
            name = fit(&c["name"], 28),
            owner = fit(&c["owner"], 30),
            tx = sx + sw / 2,
            t1 = y + 20,
            t2 = y + 37,
            t3 = y + 52,
            x1 = sx + sw,
            y1 = y + sh / 2,
            x2 = ex,
            y2 = ey + eh / 2,
            c1 = sx + sw + 40,
            c2 = ex - 40,
        );
    }
    let (dx, dw, dh) = (1120, 260, 84);
    let by_id = approvals_by_id(doc);
    for (i, d) in dests.iter().enumerate() {
        let y = 20 + (i * row) as i64 + (row as i64 - dh) / 2;
        let (state, colour) = flow_state(doc, &by_id, d);
        let (x1, y1, x2, y2) = (ex + ew, ey + eh / 2, dx, y + dh / 2);
        // Labels sit level with their destination, so rows never overlap.
        let (mx, my) = ((x1 + x2) / 2 + 20, y2);
        let _ = write!(
            s,
            r##"<g class="flow" data-destination="{name}">
<path d="M {x1} {y1} C {c1} {y1}, {c2} {y2}, {x2} {y2}" fill="none" stroke="{colour}" stroke-width="3" marker-end="url(#arrow)"/>
<rect x="{lx}" y="{ly}" width="420" height="58" rx="6" fill="#ffffff" stroke="{colour}" opacity="0.95"/>
<text x="{mx}" y="{l1}" text-anchor="middle">{subjects} subjects · {sensitive} sensitive</text>
<text x="{mx}" y="{l2}" text-anchor="middle" fill="{colour}" font-size="12">{state}</text>
<text x="{mx}" y="{l3}" text-anchor="middle" fill="#4a5568" font-size="12">{cats}</text>
<rect x="{dx}" y="{y}" width="{dw}" height="{dh}" rx="10" fill="#fffaf0" stroke="#2d3748" stroke-width="2"/>
<text x="{tx}" y="{d1}" text-anchor="middle" font-weight="bold">{name}</text>
<text x="{tx}" y="{d2}" text-anchor="middle">{recipient}</text>
<text x="{tx}" y="{d3}" text-anchor="middle">{country}</text>
</g>
"##,
            name = fit(&d["name"], 34),
            recipient = fit(&d["recipient"], 34),
            country = t(&d["country"]),
            subjects = t(&d["subjects"]),
            sensitive = t(&d["sensitive_subjects"]),
            state = esc(&state),
            cats = esc(&categories(d)),
            c1 = x1 + 160,
            c2 = x2 - 160,
            lx = mx - 210,
            ly = my - 29,
            l1 = my - 10,
            l2 = my + 8,
            l3 = my + 24,
            tx = dx + dw / 2,
            d1 = y + 26,
            d2 = y + 48,
            d3 = y + 68,
        );
    }
    s.push_str("</svg>");
    s
}

/// The categories a destination received in the report period, and its refusals.
fn categories(d: &Value) -> String {
    let refused: u64 = d["months"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["blocked"].as_object().into_iter().flatten())
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let cats = category_list(d);
    if refused > 0 {
        format!("{cats} · {refused} refused")
    } else {
        cats
    }
}

fn category_list(d: &Value) -> String {
    let mut cats: Vec<String> = d["months"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["categories"].as_array().into_iter().flatten().map(text))
        .collect();
    cats.sort();
    cats.dedup();
    if cats.is_empty() {
        "categories: -".into()
    } else {
        format!("categories: {}", cats.join(", "))
    }
}

/// The report as one self-contained HTML page.
pub fn render(doc: &Value) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Cross-border data-flow inventory — {entity}</title>
<style>
body{{font-family:sans-serif;margin:24px;color:#1a202c}}
table{{border-collapse:collapse;margin:8px 0 20px}}
th,td{{border:1px solid #cbd5e0;padding:4px 8px;text-align:left;font-size:13px}}
td.n{{text-align:right}}
th{{background:#edf2f7}}
.note{{color:#4a5568;font-size:13px}}
svg#dataflow{{max-width:1400px}}
</style></head><body>
<h1>Cross-border data-flow inventory — {entity}</h1>
{body}</body></html>
"#,
        entity = t(&doc["entity"]),
        body = body(doc),
    )
}

/// The report's content without the page around it (the console shows it in its own page,
/// under its stylesheet): every value escaped, the diagram inline, no script, no style.
pub fn body(doc: &Value) -> String {
    let r = &doc["report"];
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<p>Generated {gen} by transfer-gate. Regime <b>{regime}</b>, counting window since {ws} (today {today}). Period: {from} to {to}.</p>
<p>Entity in the window: <b>{all} subjects, {sens} sensitive</b>. Mechanism required now: <b>{req}</b>{because}.</p>
<h2>Data flows</h2>
"#,
        gen = t(&r["generated_at"]),
        regime = t(&doc["regime"]),
        ws = t(&doc["window_start"]),
        today = t(&doc["today"]),
        from = esc(r["from"].as_str().unwrap_or("start")),
        to = esc(r["to"].as_str().unwrap_or("now")),
        all = t(&doc["entity_subjects"]["all"]),
        sens = t(&doc["entity_subjects"]["sensitive"]),
        req = t(&doc["required_mechanism"]),
        because = doc["required_because"]
            .as_str()
            .map(|x| format!(" (threshold {})", esc(x)))
            .unwrap_or_default(),
    );
    o.push_str(&diagram(doc));
    let _ = writeln!(
        o,
        "\n<p class=\"note\">{}</p>\n<h2>Per destination and month</h2>",
        t(&r["subjects_note"])
    );
    for d in doc["destinations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "<h3>{} → {} ({})</h3>",
            t(&d["name"]),
            t(&d["recipient"]),
            t(&d["country"])
        );
        let months = d["months"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if months.is_empty() {
            o.push_str("<p>No personal information sent in the period.</p>\n");
            continue;
        }
        o.push_str("<table><tr><th>month</th><th>new subjects</th><th>new sensitive</th><th>categories (records)</th><th>blocked by reason</th><th>would block (observe)</th></tr>\n");
        for m in months {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                t(&m["month"]),
                t(&m["subjects"]),
                t(&m["sensitive_subjects"]),
                esc(&counts(&m["records"])),
                esc(&counts(&m["blocked"])),
                esc(&counts(&m["would_block"])),
            );
        }
        o.push_str("</table>\n");
    }
    let unreg = doc["unregistered_blocked"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !unreg.is_empty() {
        o.push_str("<h3>Refused transfers to unregistered hosts</h3>\n<table><tr><th>month</th><th>refused by reason</th></tr>\n");
        for m in unreg {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td></tr>",
                t(&m["month"]),
                esc(&counts(&m["blocked"]))
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h2>Internal systems → destinations</h2>\n<table><tr><th>system (client)</th><th>owner</th><th>destination</th><th>forwarded</th><th>refused</th><th>bytes</th><th>new subjects</th><th>new sensitive</th></tr>\n");
    for c in doc["clients"].as_array().into_iter().flatten() {
        for d in c["destinations"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                t(&c["name"]),
                t(&c["owner"]),
                t(&d["destination"]),
                t(&d["allowed"]),
                t(&d["refused"]),
                t(&d["bytes"]),
                t(&d["new_subjects"]),
                t(&d["new_sensitive_subjects"]),
            );
        }
    }
    o.push_str("</table>\n<p class=\"note\">A subject is attributed to the system that sent it to the destination first in the counting window.</p>\n");
    o.push_str("<h2>Approvals</h2>\n<table><tr><th>id</th><th>mechanism</th><th>status</th><th>state</th><th>destinations</th><th>categories</th><th>valid from</th><th>valid until</th><th>days left</th><th>used / max subjects</th><th>used / max sensitive</th><th>reference</th></tr>\n");
    for a in doc["approvals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{} / {}</td><td>{} / {}</td><td>{}</td></tr>",
            t(&a["id"]),
            t(&a["mechanism"]),
            t(&a["status"]),
            t(&a["state"]),
            esc(&list(&a["destinations"])),
            esc(&list(&a["categories"])),
            t(&a["valid_from"]),
            t(&a["valid_until"]),
            t(&a["days_to_expiry"]),
            t(&a["used_subjects"]),
            t(&a["max_subjects"]),
            t(&a["used_sensitive_subjects"]),
            t(&a["max_sensitive_subjects"]),
            t(&a["reference"]),
        );
    }
    let _ = writeln!(
        o,
        "</table>\n<p class=\"note\">Categories and refusals are recorded since {}. {}</p>",
        t(&r["activity_since"]),
        t(&r["activity_note"])
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_draws_one_edge_per_destination() {
        let doc = serde_json::json!({
            "entity": "A & B <Co>", "regime": "cac-2024", "required_mechanism": "none",
            "entity_subjects": {"all": 3, "sensitive": 1},
            "destinations": [
                {"name": "eu", "recipient": "R", "country": "DE", "subjects": 3, "sensitive_subjects": 1, "approvals": ["SC-1"], "months": [{"categories": ["health"]}]},
                {"name": "us", "recipient": "S", "country": "US", "subjects": 0, "sensitive_subjects": 0, "approvals": []}
            ],
            "approvals": [{"id": "SC-1", "mechanism": "standard_contract", "state": "in_force", "valid_until": "2027-01-01"}],
            "report": {}
        });
        let svg = diagram(&doc);
        assert!(svg.contains("A &amp; B &lt;Co&gt;"));
        assert_eq!(svg.matches("class=\"flow\"").count(), 2);
        assert!(svg.contains("standard_contract SC-1 (in force until 2027-01-01)"));
        assert!(svg.contains("categories: health"));
        let page = render(&doc);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("http://") || page.contains("http://www.w3.org/2000/svg"));
        assert!(!page.contains("<script"));
    }
}

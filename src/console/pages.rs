//! The console's pages as compile-time checked `maud` templates: every value from the
//! configuration or from traffic is inserted as text, so it is HTML-escaped. The pages read
//! the documents the API serves (`/v1/status`, the `assess` forecast, the report, the recent
//! decisions), so the console never shows a figure the API would not. Bars are inline SVG
//! drawn here: the pages need no script (only the live view has one, `live.js`).

use crate::admin::stream::Filter;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

/// One of the console's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/ui/`.
    Overview,
    /// `/ui/destinations`.
    Destinations,
    /// `/ui/approvals`.
    Approvals,
    /// `/ui/clients`.
    Clients,
    /// `/ui/decisions`.
    Decisions,
    /// `/ui/report`.
    Report,
}

impl Page {
    /// Every page, in the navigation's order.
    pub const ALL: [Page; 6] = [
        Page::Overview,
        Page::Destinations,
        Page::Approvals,
        Page::Clients,
        Page::Decisions,
        Page::Report,
    ];

    /// The page's path.
    pub fn path(self) -> &'static str {
        match self {
            Page::Overview => "/ui/",
            Page::Destinations => "/ui/destinations",
            Page::Approvals => "/ui/approvals",
            Page::Clients => "/ui/clients",
            Page::Decisions => "/ui/decisions",
            Page::Report => "/ui/report",
        }
    }

    /// The page at `path`.
    pub fn at(path: &str) -> Option<Page> {
        Page::ALL
            .into_iter()
            .find(|p| p.path() == path || (*p == Page::Overview && path == "/ui"))
    }

    fn title(self) -> &'static str {
        match self {
            Page::Overview => "Overview",
            Page::Destinations => "Destinations",
            Page::Approvals => "Approvals",
            Page::Clients => "Clients",
            Page::Decisions => "Decisions",
            Page::Report => "Report",
        }
    }
}

/// What every page shows around its content.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The entity's name.
    pub entity: &'a str,
    /// Whether a logout button is shown (a session, with a token file).
    pub logout: bool,
}

/// A JSON value as text: strings as they are, `null` as `-`.
pub fn txt(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn list(v: &Value) -> String {
    let items: Vec<String> = arr(v).iter().map(txt).collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// A horizontal bar of `ratio` (clamped to 0..=1 for drawing; over 1 is drawn full and red).
fn bar(ratio: f64, label: &str) -> Markup {
    let w = 200.0;
    let fill = (ratio.clamp(0.0, 1.0) * w).round();
    let class = if ratio >= 1.0 {
        "fill over"
    } else if ratio >= 0.8 {
        "fill hot"
    } else {
        "fill"
    };
    html! {
        svg.bar width="200" height="14" viewBox="0 0 200 14" role="img" aria-label=(label) {
            rect.track x="0" y="0" width="200" height="14" rx="3" {}
            rect class=(class) x="0" y="0" width=(fill) height="14" rx="3" {}
        }
    }
}

/// The whole page around `content`.
pub fn layout(frame: &Frame<'_>, page: Page, content: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (page.title()) " — transfer-gate — " (frame.entity) }
                link rel="stylesheet" href="/ui/assets/console.css";
                link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                header {
                    span.brand { "transfer-gate" }
                    span.entity { (frame.entity) }
                    nav aria-label="Console" {
                        @for p in Page::ALL {
                            @if p == page {
                                a href=(p.path()) aria-current="page" { (p.title()) }
                            } @else {
                                a href=(p.path()) { (p.title()) }
                            }
                        }
                    }
                    @if frame.logout {
                        form method="post" action="/ui/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="content" {
                    h1 { (page.title()) }
                    (content)
                }
            }
        }
    }
    .into_string()
}

/// The login form (a token file is configured and there is no session).
pub fn login(entity: &str, next: &str, error: Option<&str>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in — transfer-gate — " (entity) }
                link rel="stylesheet" href="/ui/assets/console.css";
                link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                header { span.brand { "transfer-gate" } span.entity { (entity) } }
                main {
                    h1 { "Log in" }
                    form.login method="post" action="/ui/login" {
                        @if let Some(e) = error { p.error role="alert" { (e) } }
                        label for="token" { "Admin token (the contents of " code { "gate.admin_token_file" } ")" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        input type="hidden" name="next" value=(next);
                        button type="submit" { "Log in" }
                    }
                    p.note { "The token is sent once, in this form; the console then keeps a session cookie." }
                }
            }
        }
    }
    .into_string()
}

fn yes_no_threshold(t: &Value) -> bool {
    num(&t["limit"]) == 1
}

/// Overview: entity counts against every threshold, the mechanism required now, and the
/// `assess` forecast.
pub fn overview(s: &Value, a: Option<&Value>) -> Markup {
    html! {
        p.meta {
            "Regime " b { (txt(&s["regime"])) } ", mode " b { (txt(&s["mode"])) }
            ", counting window since " (txt(&s["window_start"])) " (today " (txt(&s["today"])) "). Ledger "
            (txt(&s["ledger"]["backend"]))
            @if s["ledger"]["up"] == true { " up." } @else { span.error { " DOWN: transfers with personal information get 503; counts may be stale." } }
        }
        div.cards {
            div.card #entity-all { div.k { "Subjects in the window" } div.v { (txt(&s["entity_subjects"]["all"])) } }
            div.card #entity-sensitive { div.k { "Sensitive subjects" } div.v { (txt(&s["entity_subjects"]["sensitive"])) } }
            div.card #required-mechanism {
                div.k { "Mechanism required now" }
                div.v { (txt(&s["required_mechanism"])) }
                @if let Some(t) = s["required_because"].as_str() { div.note { "because of threshold " (t) } }
            }
        }
        h2 { "Thresholds" }
        table #thresholds {
            thead { tr { th { "threshold" } th { "count" } th { "limit" } th { "headroom" } th { "used" } th { "" } } }
            tbody {
                @for t in arr(&s["thresholds"]) {
                    @let ratio = t["utilization"].as_f64().unwrap_or(0.0);
                    tr data-threshold=(txt(&t["name"])) {
                        td { (txt(&t["name"])) }
                        td.n.count { (txt(&t["count"])) }
                        td.n { (txt(&t["limit"])) }
                        @if yes_no_threshold(t) {
                            td.n { "-" }
                            @if num(&t["count"]) >= 1 {
                                td.state-crossed { "crossed" }
                            } @else {
                                td.state-not-crossed { "not crossed" }
                            }
                        } @else {
                            td.n { (txt(&t["headroom"])) }
                            td.n { (format!("{:.1}%", ratio * 100.0)) }
                        }
                        @let label = if yes_no_threshold(t) {
                            format!("{}: {}", txt(&t["name"]), if num(&t["count"]) >= 1 { "crossed" } else { "not crossed" })
                        } else {
                            format!("{} {:.1}%", txt(&t["name"]), ratio * 100.0)
                        };
                        td { (bar(ratio, &label)) }
                    }
                }
            }
        }
        h2 { "Forecast" }
        @match a {
            None => p.error { "The forecast is unavailable: the activity history could not be read (see the gate's log)." },
            Some(a) => (forecast(a)),
        }
    }
}

fn forecast(a: &Value) -> Markup {
    html! {
        p.meta #rate {
            "New subjects in the last 30 days: " b { (txt(&a["rate_30_days"]["all"])) }
            " (" (txt(&a["rate_30_days"]["sensitive"])) " sensitive; from "
            (txt(&a["rate_30_days"]["source"])) "). Actions due now: " b #actions-due { (txt(&a["actions_due"])) } "."
        }
        table #forecast {
            thead { tr { th { "threshold" } th { "crossed" } th { "on" } th { "requires" } th { "application" } th { "start from" } th { "start by" } th { "destinations without it" } } }
            tbody {
                @for t in arr(&a["thresholds"]) {
                    tr {
                        td { (txt(&t["name"])) }
                        td { (txt(&t["crossing"]).replace('_', " ")) }
                        td { (txt(&t["crossing_date"])) }
                        td { (txt(&t["mechanism"])) }
                        td { (txt(&t["application"]["state"]).replace('_', " ")) }
                        td { (txt(&t["application"]["opens"])) }
                        td { (txt(&t["application"]["latest_start"])) }
                        td { (list(&t["application"]["destinations_without"])) }
                    }
                }
            }
        }
        h3 { "Renewals" }
        @if arr(&a["renewals"]).is_empty() {
            p.note { "No approval with an expiry date." }
        } @else {
            table #renewals {
                thead { tr { th { "approval" } th { "mechanism" } th { "valid until" } th { "days left" } th { "start from" } th { "apply by" } th { "state" } } }
                tbody {
                    @for r in arr(&a["renewals"]) {
                        tr {
                            td { (txt(&r["approval"])) }
                            td { (txt(&r["mechanism"])) }
                            td { (txt(&r["valid_until"])) }
                            td.n { (txt(&r["days_to_expiry"])) }
                            td { (txt(&r["start_from"])) }
                            td { (txt(&r["apply_by"])) }
                            td { (txt(&r["state"]).replace('_', " ")) }
                        }
                    }
                }
            }
        }
    }
}

/// Destinations: recipient, country, counts, approvals, allowed clients, and requests allowed
/// and refused in the last hour and day.
pub fn destinations(s: &Value) -> Markup {
    html! {
        table #destinations {
            thead {
                tr {
                    th rowspan="2" { "destination" } th rowspan="2" { "recipient" } th rowspan="2" { "country" }
                    th rowspan="2" { "subjects" } th rowspan="2" { "sensitive" } th rowspan="2" { "approvals" }
                    th rowspan="2" { "allowed clients" }
                    th colspan="2" { "last hour" } th colspan="2" { "last day" }
                }
                tr { th { "allowed" } th { "refused" } th { "allowed" } th { "refused" } }
            }
            tbody {
                @for d in arr(&s["destinations"]) {
                    tr data-destination=(txt(&d["name"])) {
                        td { (txt(&d["name"])) @if let Some(e) = d["exemption"].as_str() { br; span.note { "exempt: " (e) } } }
                        td { (txt(&d["recipient"])) }
                        td { (txt(&d["country"])) }
                        td.n.subjects { (txt(&d["subjects"])) }
                        td.n.sensitive { (txt(&d["sensitive_subjects"])) }
                        td { (list(&d["approvals"])) }
                        td { @if d["clients"].is_null() { span.note { "any" } } @else { (list(&d["clients"])) } }
                        td.n { (txt(&d["requests"]["last_hour"]["allowed"])) }
                        td.n { (txt(&d["requests"]["last_hour"]["refused"])) }
                        td.n { (txt(&d["requests"]["last_day"]["allowed"])) }
                        td.n { (txt(&d["requests"]["last_day"]["refused"])) }
                    }
                }
            }
        }
        @if arr(&s["destinations"]).is_empty() { p.note { "No destination is registered." } }
    }
}

/// How close an approval is to expiry: `mark-30`, `mark-180` or nothing.
fn expiry_mark(a: &Value) -> Option<&'static str> {
    let days = a["days_to_expiry"].as_i64()?;
    if a["state"] != "in_force" && a["state"] != "not_yet_valid" {
        return None;
    }
    if days < 30 {
        Some("mark-30")
    } else if days < 180 {
        Some("mark-180")
    } else {
        None
    }
}

fn volume(used: &Value, max: &Value) -> Markup {
    html! {
        (txt(used)) " / " (txt(max))
        @if let Some(m) = max.as_u64().filter(|m| *m > 0) {
            br;
            (bar(num(used) as f64 / m as f64, &format!("{} of {}", num(used), m)))
        }
    }
}

/// Approvals: state, days to expiry (marked under 180 and under 30 days), volume used.
pub fn approvals(s: &Value) -> Markup {
    html! {
        p.legend { span.mark-180 { "expires in under 180 days" } span.mark-30 { "expires in under 30 days" } }
        table #approvals {
            thead {
                tr {
                    th { "id" } th { "mechanism" } th { "status" } th { "state" } th { "destinations" }
                    th { "categories" } th { "valid from" } th { "valid until" } th { "days left" }
                    th { "subjects used / max" } th { "sensitive used / max" } th { "reference" }
                }
            }
            tbody {
                @for a in arr(&s["approvals"]) {
                    tr class=[expiry_mark(a)] data-approval=(txt(&a["id"])) {
                        td { (txt(&a["id"])) }
                        td { (txt(&a["mechanism"])) }
                        td { (txt(&a["status"])) }
                        td class=(format!("state-{}", txt(&a["state"]))) { (txt(&a["state"]).replace('_', " ")) }
                        td { (list(&a["destinations"])) }
                        td { (list(&a["categories"])) }
                        td { (txt(&a["valid_from"])) }
                        td { (txt(&a["valid_until"])) }
                        td.n.days { (txt(&a["days_to_expiry"])) }
                        td { (volume(&a["used_subjects"], &a["max_subjects"])) }
                        td { (volume(&a["used_sensitive_subjects"], &a["max_sensitive_subjects"])) }
                        td { (txt(&a["reference"])) }
                    }
                }
            }
        }
        @if arr(&s["approvals"]).is_empty() { p.note { "No approval is registered." } }
    }
}

/// Clients: which internal services send what to where in the window, with refusals.
pub fn clients(s: &Value, declared: &[ClientInfo<'_>]) -> Markup {
    let info = |name: &str| declared.iter().find(|c| c.name == name);
    html! {
        p.note { "Counts are for the counting window. A subject is attributed to the service that sent it to the destination first." }
        table #clients {
            thead {
                tr {
                    th { "client" } th { "owner" } th { "identified by" } th { "mode" } th { "destination" }
                    th { "allowed" } th { "refused" } th { "bytes" } th { "new subjects" } th { "new sensitive" }
                }
            }
            tbody {
                @for c in arr(&s["clients"]) {
                    @let name = txt(&c["name"]);
                    @let ci = info(&name);
                    @let dests = arr(&c["destinations"]);
                    @if dests.is_empty() {
                        tr data-client=(name) {
                            td { (name) } td { (txt(&c["owner"])) }
                            td { (ci.map_or("-", |c| c.identified_by)) } td { (ci.map_or("-", |c| c.mode)) }
                            td.note { "nothing sent" } td.n { "0" } td.n { "0" } td.n { "0" } td.n { "0" } td.n { "0" }
                        }
                    }
                    @for d in dests {
                        tr data-client=(name) data-destination=(txt(&d["destination"])) {
                            td { (name) } td { (txt(&c["owner"])) }
                            td { (ci.map_or("-", |c| c.identified_by)) } td { (ci.map_or("-", |c| c.mode)) }
                            td { (txt(&d["destination"])) }
                            td.n.allowed { (txt(&d["allowed"])) }
                            td.n.refused { (txt(&d["refused"])) }
                            td.n { (txt(&d["bytes"])) }
                            td.n { (txt(&d["new_subjects"])) }
                            td.n { (txt(&d["new_sensitive_subjects"])) }
                        }
                    }
                }
            }
        }
        @if arr(&s["clients"]).is_empty() {
            p.note { "No client is declared and no request came from an unidentified one. Declare services with [[client]] blocks (README, \"Who is sending\")." }
        }
    }
}

/// What the clients page shows of a declared client's configuration.
#[derive(Debug)]
pub struct ClientInfo<'a> {
    /// Its name.
    pub name: &'a str,
    /// `certificate`, `token`, `address` or a combination.
    pub identified_by: &'a str,
    /// `enforce` or `observe`.
    pub mode: &'a str,
}

/// The choices of the decisions page's filter selects.
#[derive(Debug)]
pub struct Choices<'a> {
    /// Destination names (and `unknown`).
    pub destinations: Vec<&'a str>,
    /// Client names (and `unidentified`).
    pub clients: Vec<&'a str>,
    /// `allow`, `block`, `would_block`.
    pub decisions: Vec<&'a str>,
    /// Every reason code.
    pub reasons: Vec<&'a str>,
}

fn select(name: &str, label: &str, options: &[&str], chosen: Option<&str>) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" selected[chosen.is_none()] { "any" }
                @for o in options {
                    option value=(o) selected[chosen == Some(*o)] { (o) }
                }
            }
        }
    }
}

/// Columns of the decisions table (the live view fills the same ones).
const DECISION_COLUMNS: [&str; 11] = [
    "time",
    "destination",
    "client_name",
    "identified_by",
    "method",
    "path",
    "decision",
    "reason",
    "new_subjects",
    "new_sensitive_subjects",
    "approval",
];

/// Rows the live view keeps.
pub const LIVE_ROWS: usize = 500;

/// Decisions: the recent ones that pass the filters, then new ones live.
pub fn decisions(recent: &[Value], f: &Filter, c: &Choices<'_>) -> Markup {
    html! {
        form.filters method="get" action="/ui/decisions" {
            (select("destination", "destination", &c.destinations, f.destination.as_deref()))
            (select("client_name", "client", &c.clients, f.client_name.as_deref()))
            (select("decision", "decision", &c.decisions, f.decision.map(|d| d.as_str())))
            (select("reason", "reason", &c.reasons, f.reason.as_deref()))
            button type="submit" { "Filter" }
            span #live-state { "live view needs JavaScript" }
        }
        p #dropped hidden {}
        table #decisions data-max-rows=(LIVE_ROWS)
            data-destination=[f.destination.as_deref()] data-client-name=[f.client_name.as_deref()]
            data-decision=[f.decision.map(|d| d.as_str())] data-reason=[f.reason.as_deref()] {
            thead { tr { @for c in DECISION_COLUMNS { th { (c.replace('_', " ")) } } } }
            tbody {
                @for d in recent {
                    tr {
                        @for c in DECISION_COLUMNS {
                            @let v = txt(&d[c]);
                            @if c == "decision" {
                                td class=(format!("decision-{v}")) { (v) }
                            } @else if c.starts_with("new_") {
                                td.n { (v) }
                            } @else {
                                td { (v) }
                            }
                        }
                    }
                }
                @if recent.is_empty() {
                    tr #no-decisions { td colspan=(DECISION_COLUMNS.len()) { "No decision yet that passes the filters." } }
                }
            }
        }
        p.note { "Decisions never carry identifiers: the path is redacted and has no query." }
        script src="/ui/assets/live.js" defer {}
    }
}

/// Report: the data-flow inventory and its diagram (the HTML report's body), with downloads.
pub fn report(body_html: &str) -> Markup {
    html! {
        p.downloads {
            "Download: "
            a href="/ui/report.html" download { "HTML" }
            a href="/ui/report.md" download { "Markdown" }
            a href="/ui/report.json" download { "JSON" }
        }
        // The report renders its own values escaped (crate::report::html::esc).
        div #report { (PreEscaped(body_html)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_escaped_everywhere() {
        let evil = "<script>alert(\"x\")</script>'";
        let s = json!({
            "destinations": [{"name": "eu", "recipient": evil, "country": "DE", "clients": [evil],
                               "approvals": [evil], "requests": {"last_hour": {"allowed": 1, "refused": 2}}}],
            "approvals": [{"id": evil, "reference": evil, "state": "in_force", "days_to_expiry": 10}],
            "clients": [{"name": evil, "owner": evil, "destinations": []}],
            "thresholds": [{"name": evil, "limit": 1, "count": 0, "utilization": 0.0}],
            "entity_subjects": {"all": 1, "sensitive": 0}, "required_mechanism": evil,
        });
        let frame = Frame {
            entity: evil,
            logout: true,
        };
        for m in [
            overview(&s, None),
            destinations(&s),
            approvals(&s),
            clients(&s, &[]),
        ] {
            let page = layout(&frame, Page::Overview, m);
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        }
        let f = Filter {
            destination: Some(evil.into()),
            ..Filter::default()
        };
        let c = Choices {
            destinations: vec![evil],
            clients: vec![],
            decisions: vec![],
            reasons: vec![],
        };
        let page = decisions(&[json!({"path": evil, "decision": evil})], &f, &c).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        let l = login(evil, evil, Some(evil));
        assert!(!l.contains("<script>alert"), "{l}");
    }

    #[test]
    fn approvals_are_marked_at_180_and_30_days() {
        let s = json!({"approvals": [
            {"id": "a", "state": "in_force", "days_to_expiry": 400},
            {"id": "b", "state": "in_force", "days_to_expiry": 179},
            {"id": "c", "state": "in_force", "days_to_expiry": 29},
            {"id": "d", "state": "expired", "days_to_expiry": -3},
        ]});
        let page = approvals(&s).into_string();
        assert!(page.contains(r#"<tr data-approval="a">"#), "{page}");
        assert!(
            page.contains(r#"<tr class="mark-180" data-approval="b">"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<tr class="mark-30" data-approval="c">"#),
            "{page}"
        );
        assert!(page.contains(r#"<tr data-approval="d">"#), "{page}");
    }

    #[test]
    fn a_yes_no_threshold_reads_crossed_or_not() {
        let s = json!({"thresholds": [
            {"name": "any_sensitive", "limit": 1, "count": 30, "utilization": 30.0},
            {"name": "subjects_100k", "limit": 100000, "count": 5, "headroom": 99995, "utilization": 0.00005},
        ]});
        let page = overview(&s, None).into_string();
        assert!(page.contains(">crossed<"), "{page}");
        assert!(!page.contains("3000.0%"), "{page}");
        assert!(page.contains(">0.0%<"), "{page}");
    }

    #[test]
    fn every_page_links_every_other() {
        for p in Page::ALL {
            let page = layout(
                &Frame {
                    entity: "Co",
                    logout: false,
                },
                p,
                html! {},
            );
            for q in Page::ALL {
                assert!(
                    page.contains(&format!("href=\"{}\"", q.path())),
                    "{p:?} → {q:?}"
                );
            }
            assert_eq!(page.matches("aria-current=\"page\"").count(), 1);
            assert!(!page.contains("/ui/logout"));
            assert_eq!(Page::at(p.path()), Some(p));
        }
    }
}

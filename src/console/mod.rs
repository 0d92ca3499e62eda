//! The security team's console (SPEC §6 "Console"): read-only pages under `/ui/` on the
//! admin listener — Overview, Destinations, Approvals, Clients, Decisions (live) and Report —
//! rendered on the server from the documents the API serves, plus the login form and the
//! session that lets the browser read `/v1/*` without ever holding the admin token.
//!
//! Access follows `/v1/*`: without `gate.admin_token_file`, loopback callers only; with one, a
//! login form takes the token once (in a POST body, never a URL) and opens a server-side
//! session ([`session`]). Every response carries a Content-Security-Policy that allows no
//! inline script and no other origin, plus `nosniff`, `no-referrer` and frame denial; every
//! asset is compiled into the binary (no CDN, no web font).

pub mod pages;
pub mod session;

use crate::admin::query_param;
use crate::admin::stream::Filter;
use crate::policy::{Decision, Reason};
use crate::proxy::Gate;
use crate::report::Month;
use crate::respond::{self, Failure, GateBody};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pages::{Choices, ClientInfo, Frame, Page};
use serde_json::Value;
use session::Sessions;
use std::net::SocketAddr;
use std::time::Instant;

/// The policy on every admin response: same-origin scripts, styles, images and connections
/// only, no inline script or style, no plugin, no framing, forms post only to the gate.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The query parameters a console page takes (the decisions filters, the report's months).
const FILTERS: [&str; 6] = [
    "destination",
    "client_name",
    "decision",
    "reason",
    "from",
    "to",
];

/// The largest login form body read.
const MAX_FORM: usize = 4096;

/// Adds the console's security headers to any admin response.
pub fn secure(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k, v| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
}

/// Who is asking, as the console and `/v1/*` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token file, a loopback caller: everything, no login.
    Open,
    /// A live session (its id).
    Session(String),
    /// A token file and no session: the login form.
    Login,
    /// No token file and a caller that is not on loopback: nothing.
    Refused,
}

/// The access of a request from `peer` with `headers`, given the admin token now.
pub fn access(
    token: Option<&str>,
    sessions: &Sessions,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Access {
    let Some(token) = token else {
        return if peer.ip().is_loopback() {
            Access::Open
        } else {
            Access::Refused
        };
    };
    let now = Instant::now();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(session::from_cookie)
        .find(|id| sessions.check(id, token, now))
        .map_or(Access::Login, |id| Access::Session(id.to_owned()))
}

fn html(status: StatusCode, body: String) -> Response<GateBody> {
    let mut r = Response::new(respond::full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn see_other(to: &str) -> Response<GateBody> {
    let mut r = Response::new(respond::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Where to go after login: a console page (with its query), nothing else (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic())
                && !n.starts_with("/ui/login") =>
        {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

fn forwarded_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let s = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        session::COOKIE,
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
}

/// A static asset compiled into the binary.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/ui/assets/console.css" => (
            "text/css; charset=utf-8",
            include_str!("assets/console.css"),
        ),
        "/ui/assets/live.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/live.js"),
        ),
        "/ui/assets/favicon.svg" => ("image/svg+xml", include_str!("assets/favicon.svg")),
        _ => return None,
    })
}

/// Serves `/ui` and everything under `/ui/`.
pub async fn handle(
    gate: &Gate,
    sessions: &Sessions,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<GateBody> {
    let token = gate.snapshot().admin_token.clone();
    let acc = access(token.as_deref(), sessions, peer, req.headers());
    if acc == Access::Refused {
        return respond::failure(Failure::Unauthorized, "");
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if let Some((ct, body)) = asset(&path) {
        if method != Method::GET && method != Method::HEAD {
            return respond::failure(Failure::MethodNotAllowed, "");
        }
        let mut r = Response::new(respond::full(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return r;
    }
    let entity = gate.snapshot().config.entity.name.clone();
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/ui/login") => match (&acc, token) {
            (Access::Login, Some(_)) => {
                let next = safe_next(query_param(req.uri().query(), "next").as_deref());
                html(StatusCode::OK, pages::login(&entity, &next, None))
            }
            _ => see_other("/ui/"),
        },
        (Method::POST, "/ui/login") => {
            let Some(token) = token else {
                return see_other("/ui/");
            };
            let secure = forwarded_tls(req.headers());
            let within = gate.snapshot().config.timeouts.idle;
            let form = match read_form(req, within).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            let given = query_param(Some(&form), "token").unwrap_or_default();
            let next = safe_next(query_param(Some(&form), "next").as_deref());
            if !crate::admin::ct_eq(given.trim().as_bytes(), token.as_bytes()) {
                tracing::warn!(peer = %peer, "console: login with a wrong token");
                return html(
                    StatusCode::UNAUTHORIZED,
                    pages::login(&entity, &next, Some("That token is not the admin token.")),
                );
            }
            match sessions.open(&token, Instant::now()) {
                Ok(id) => {
                    tracing::info!(peer = %peer, "console: login");
                    let mut r = see_other(&next);
                    r.headers_mut().insert(
                        header::SET_COOKIE,
                        cookie(&id, session::ABSOLUTE.as_secs(), secure),
                    );
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "console: no random session id");
                    respond::failure(Failure::Busy, "")
                }
            }
        }
        (Method::POST, "/ui/logout") => {
            if let Access::Session(id) = &acc {
                sessions.close(id);
            }
            let mut r = see_other(if token.is_some() { "/ui/login" } else { "/ui/" });
            r.headers_mut().insert(
                header::SET_COOKIE,
                cookie("", 0, forwarded_tls(req.headers())),
            );
            r
        }
        (Method::GET | Method::HEAD, p) => {
            if acc == Access::Login {
                // Back to this page after login, with its filters only: whatever else the
                // query holds (a token someone pasted into it) is not carried along.
                let kept: Vec<&str> = req
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter(|kv| {
                        let k = kv.split_once('=').map_or(*kv, |(k, _)| k);
                        FILTERS.contains(&k)
                    })
                    .collect();
                let here = if kept.is_empty() {
                    p.to_owned()
                } else {
                    format!("{p}?{}", kept.join("&"))
                };
                let next = safe_next(Some(&here));
                return see_other(&format!("/ui/login?next={}", encode(&next)));
            }
            let frame = Frame {
                entity: &entity,
                logout: matches!(acc, Access::Session(_)),
            };
            if let Some(page) = Page::at(p) {
                let body = render(gate, page, req.uri().query()).await;
                return html(StatusCode::OK, pages::layout(&frame, page, body));
            }
            if let Some(format) = p.strip_prefix("/ui/report.") {
                return download(gate, format, req.uri().query()).await;
            }
            respond::failure(Failure::NotFound, "")
        }
        _ => respond::failure(Failure::MethodNotAllowed, ""),
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The login form's body: at most [`MAX_FORM`] bytes, whole within `within` (the admin
/// listener's idle timeout — a request in flight is not idle, so a client that sends half a
/// form would otherwise hold its connection for good).
async fn read_form(
    req: Request<Incoming>,
    within: std::time::Duration,
) -> Result<String, Response<GateBody>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_FORM);
    match tokio::time::timeout(within, limited.collect()).await {
        Ok(Ok(b)) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Ok(Err(_)) => Err(respond::failure(
            Failure::BadRequest("the login form is limited to 4 KiB"),
            "",
        )),
        Err(_) => Err(respond::failure(
            Failure::BadRequest("the login form did not arrive in time"),
            "",
        )),
    }
}

/// The `/v1/status` document and, when the history can be read, the `assess` forecast.
async fn status_and_forecast(gate: &Gate) -> (Value, Option<Value>) {
    let status = crate::status::status(gate).await;
    let history = crate::report::history_document(gate, &gate.history).await;
    let forecast = (|| {
        let s = serde_json::from_value(status.clone()).ok()?;
        let h = serde_json::from_value(history).ok()?;
        serde_json::to_value(crate::assess::assess(&s, &h)).ok()
    })();
    (status, forecast)
}

async fn render(gate: &Gate, page: Page, query: Option<&str>) -> maud::Markup {
    match page {
        Page::Overview => {
            let (s, a) = status_and_forecast(gate).await;
            pages::overview(&s, a.as_ref())
        }
        Page::Destinations => pages::destinations(&crate::status::status(gate).await),
        Page::Approvals => pages::approvals(&crate::status::status(gate).await),
        Page::Clients => {
            let snap = gate.snapshot();
            let declared: Vec<(String, &str, &str)> = snap
                .config
                .clients
                .iter()
                .map(|c| {
                    let mut by = Vec::new();
                    if !c.tls_identities.is_empty() {
                        by.push("certificate");
                    }
                    if !c.token_sha256.is_empty() {
                        by.push("token");
                    }
                    if !c.cidrs.is_empty() {
                        by.push("address");
                    }
                    (by.join(", "), c.name.as_str(), c.mode.as_str())
                })
                .collect();
            let info: Vec<ClientInfo<'_>> = declared
                .iter()
                .map(|(by, name, mode)| ClientInfo {
                    name,
                    identified_by: by,
                    mode,
                })
                .collect();
            pages::clients(&crate::status::status(gate).await, &info)
        }
        Page::Decisions => {
            // A `decision` that is none of the three filters nothing out of the page: it shows
            // every decision, and the select says "any".
            let f = Filter::parse(query).unwrap_or_default();
            let recent: Vec<Value> = gate
                .audit
                .recent(crate::audit::RECENT)
                .iter()
                .filter(|r| f.matches(r))
                .take(pages::LIVE_ROWS)
                .filter_map(|r| serde_json::to_value(&**r).ok())
                .collect();
            let snap = gate.snapshot();
            let mut destinations: Vec<&str> = snap
                .config
                .destinations
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            destinations.push("unknown");
            let mut clients: Vec<&str> = snap
                .config
                .clients
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            clients.push(crate::config::UNIDENTIFIED);
            let choices = Choices {
                destinations,
                clients,
                decisions: Decision::ALL.iter().map(|d| d.as_str()).collect(),
                reasons: Reason::ALL.iter().map(|r| r.as_str()).collect(),
            };
            pages::decisions(&recent, &f, &choices)
        }
        Page::Report => {
            let doc = crate::report::document(gate, &gate.history, None, None).await;
            pages::report(&crate::report::html::body(&doc))
        }
    }
}

/// `/ui/report.{html,md,json}` (with `from` / `to` months as `/v1/report` takes them), as a
/// download.
async fn download(gate: &Gate, format: &str, query: Option<&str>) -> Response<GateBody> {
    let mut months = [None, None];
    for (slot, name) in months.iter_mut().zip(["from", "to"]) {
        if let Some(v) = query_param(query, name).filter(|v| !v.is_empty()) {
            match Month::parse(&v) {
                Some(m) => *slot = Some(m),
                None => {
                    return respond::failure(Failure::BadRequest("months are YYYY-MM"), "");
                }
            }
        }
    }
    let (ct, render): (&'static str, fn(&Value) -> String) = match format {
        "html" => ("text/html; charset=utf-8", crate::report::html::render),
        "md" => ("text/markdown; charset=utf-8", crate::report::md::render),
        "json" => ("application/json", crate::report::json::render),
        _ => return respond::failure(Failure::NotFound, ""),
    };
    let doc = crate::report::document(gate, &gate.history, months[0], months[1]).await;
    let mut r = Response::new(respond::full(render(&doc)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"transfer-gate-report.{format}\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(
            safe_next(Some("/ui/decisions?decision=block")),
            "/ui/decisions?decision=block"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/v1/status",
            "/ui/login?next=x",
            "/ui/\\evil",
            "/ui/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&client_name=billing%2Dapi&x"), "client_name").as_deref(),
            Some("billing-api")
        );
        assert_eq!(
            query_param(Some("token=a+b%21"), "token").as_deref(),
            Some("a b!")
        );
        assert_eq!(query_param(Some("x"), "x").as_deref(), Some(""));
        assert_eq!(query_param(None, "x"), None);
        assert_eq!(
            encode("/ui/decisions?reason=a b"),
            "/ui/decisions%3Freason%3Da%20b"
        );
    }

    #[test]
    fn access_follows_the_admin_rule() {
        let s = Sessions::default();
        let lo: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let far: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(access(None, &s, lo, &none), Access::Open);
        assert_eq!(access(None, &s, far, &none), Access::Refused);
        assert_eq!(access(Some("t"), &s, lo, &none), Access::Login);
        let id = s.open("t", Instant::now()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; tg_console={id}")).unwrap(),
        );
        assert_eq!(access(Some("t"), &s, far, &h), Access::Session(id.clone()));
        assert_eq!(access(Some("new token"), &s, far, &h), Access::Login);
    }
}

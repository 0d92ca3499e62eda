//! The security team's console (SPEC §6 "Console") through the real binary: access (login
//! form, session cookie, 401 with no cookie, the token never in a URL, logout, a new token
//! ending old sessions), the security headers on every response, hostile values from the
//! config escaped, and — in a real headless Chromium driven by Playwright
//! (`tests/browser/console.py`) — every page checked against `/v1/status`, a refusal
//! appearing live, no raw identifier in the DOM, every request to the gate's origin, and no
//! console error or CSP violation.

use crate::harness::approvals::CATEGORIES;
use crate::harness::upstream::Upstream;
use crate::harness::{require_tool, Dest, GateBuilder, GateProc};
use std::process::Command;

const TOKEN: &str = "console-admin-token-0123456789abcdef";
const BILLING_TOKEN: &str = "billing-token-0123456789abcdef";
const CRM_TOKEN: &str = "crm-token-0123456789abcdef0123";
/// A value that runs a script wherever it is not escaped.
const EVIL: &str = r#"<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'"#;
/// An approval id (free text in the register, a metric label) that is also hostile.
const EVIL_ID: &str = r#"SCC-<script>window.__pwned=1</script>"'"#;
/// Identifiers the traffic carries; none may reach the console's DOM or downloads.
const IDENTIFIERS: [&str; 8] = [
    "u-1001",
    "13812345678",
    "li.lei@example.com",
    "13900001111",
    "110105194912310025",
    "u-2001",
    "u-2002",
    "u-3003",
];

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `eu` (hostile recipient, billing only, three approvals expiring in 20, 100 and 400 days),
/// `us` (no approval); clients billing and crm (hostile owner); an admin token file.
async fn console_gate(up: &Upstream) -> GateProc {
    let today = crate::harness::shanghai_today();
    let approval = |id: &str, days: i64, reference: &str| {
        format!(
            "[[approval]]\nid = {}\nmechanism = \"standard_contract\"\nstatus = \"active\"\n\
             destinations = [\"eu\"]\ncategories = [\"basic\", \"contact\", \"health\"]\n\
             valid_from = \"2024-01-01\"\nvalid_until = \"{}\"\nmax_subjects = 1000\nreference = {}\n",
            toml_str(id),
            today + time::Duration::days(days),
            toml_str(reference)
        )
    };
    let digest = transfer_gate::identity::token_digest_hex;
    GateBuilder::new()
        .file("admin.token", TOKEN.as_bytes())
        .gate_key("admin_token_file = \"admin.token\"")
        .section(CATEGORIES)
        .section(&format!(
            "[[client]]\nname = \"billing\"\nowner = \"payments team\"\ntoken_sha256 = [\"{}\"]\n\n\
             [[client]]\nname = \"crm\"\nowner = {}\ntoken_sha256 = [\"{}\"]",
            digest(BILLING_TOKEN),
            toml_str(EVIL),
            digest(CRM_TOKEN)
        ))
        .section(&format!(
            "[[destination]]\nname = \"eu\"\nrecipient = {}\ncountry = \"DE\"\nhosts = [\"api.eu.test\"]\n\
             connect_to = \"{}\"\nclients = [\"billing\"]",
            toml_str(EVIL),
            up.addr
        ))
        .destination(Dest::new("us", "api.us.test").connect_to(up.addr))
        .approvals(&format!(
            "{}\n{}\n{}\n{}",
            approval("SCC-SOON", 20, EVIL),
            approval("SCC-HALF", 100, "contract 2"),
            approval("SCC-LONG", 400, "contract 3"),
            approval(EVIL_ID, 400, "contract 4")
        ))
        .start()
        .await
}

async fn send(gate: &GateProc, token: &str, url: &str, body: &str) -> u16 {
    gate.post_status(url, body, Some(token)).await
}

/// Allowed, refused by the allowlist and refused for want of an approval.
async fn traffic(gate: &GateProc) {
    let eu = "http://api.eu.test/v1/customers/13812345678?email=li.lei@example.com";
    let ok = r#"{"user_id":"u-1001","phone":"13812345678","email":"li.lei@example.com"}"#;
    assert_eq!(send(gate, BILLING_TOKEN, eu, ok).await, 200);
    assert_eq!(send(gate, CRM_TOKEN, eu, ok).await, 403);
    let us = "http://api.us.test/v1/patients/13900001111";
    let sensitive = r#"{"user_id":"u-2001","diagnosis":"flu"}"#;
    assert_eq!(send(gate, BILLING_TOKEN, us, sensitive).await, 451);
}

fn admin() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(
    gate: &GateProc,
    form: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = admin().post(gate.admin_url("/ui/login")).form(form);
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn session_cookie(r: &reqwest::Response) -> String {
    let c = r
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    c.split(';').next().unwrap().to_owned()
}

async fn get(gate: &GateProc, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut r = admin().get(gate.admin_url(path));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

fn assert_secure_headers(r: &reqwest::Response, what: &str) {
    let h = |k: &str| {
        r.headers()
            .get(k)
            .unwrap_or_else(|| panic!("{what}: no {k}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = h("content-security-policy");
    for d in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(d), "{what}: CSP {csp} lacks {d}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{what}: {csp}"
    );
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
}

const PAGES: [&str; 6] = [
    "/ui/",
    "/ui/destinations",
    "/ui/approvals",
    "/ui/clients",
    "/ui/decisions",
    "/ui/report",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_needs_the_token_once_and_a_session_after() {
    let up = Upstream::http().await;
    let gate = console_gate(&up).await;
    traffic(&gate).await;

    // No session: every page sends to the login form; a token in a query string is ignored.
    for p in PAGES {
        let r = get(&gate, p, None).await;
        assert_eq!(r.status(), 303, "{p}");
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/ui/login?next="), "{p} → {to}");
        assert_secure_headers(&r, p);
    }
    let r = get(
        &gate,
        &format!("/ui/decisions?token={TOKEN}&decision=block"),
        None,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(r.headers().get("set-cookie").is_none());
    // The way back after login keeps the filters, not the token.
    assert_eq!(
        r.headers()["location"],
        "/ui/login?next=/ui/decisions%3Fdecision%3Dblock"
    );
    let r = get(&gate, &format!("/v1/status?token={TOKEN}"), None).await;
    assert_eq!(r.status(), 401);
    let r = get(&gate, "/ui/login", None).await;
    assert_eq!(r.status(), 200);
    assert_secure_headers(&r, "/ui/login");
    let form = r.text().await.unwrap();
    assert!(
        form.contains("method=\"post\"") && form.contains("type=\"password\""),
        "{form}"
    );

    // A wrong token: 401, no cookie, no data.
    let r = login(&gate, &[("token", "wrong"), ("next", "/ui/")], &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("thresholds") && !body.contains("SCC-"),
        "{body}"
    );
    // An oversized form is refused.
    let big = "x".repeat(8192);
    let r = login(&gate, &[("token", &big)], &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());

    // The right token: a session cookie, and only a console page as the next stop.
    let r = login(
        &gate,
        &[("token", TOKEN), ("next", "https://evil.example/")],
        &[],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure") && !set.contains(TOKEN), "{set}");
    let cookie = session_cookie(&r);
    let r = login(
        &gate,
        &[("token", TOKEN), ("next", "/ui/decisions?decision=block")],
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(r.headers()["location"], "/ui/decisions?decision=block");
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // With the session: every page, the API's reads, never its writes.
    for p in PAGES {
        let r = get(&gate, p, Some(&cookie)).await;
        assert_eq!(r.status(), 200, "{p}");
        assert_secure_headers(&r, p);
        assert_eq!(r.headers()["cache-control"], "no-store", "{p}");
        let html = r.text().await.unwrap();
        assert!(
            !html.contains(EVIL) && !html.contains("<script>window"),
            "{p}: {html}"
        );
        for id in IDENTIFIERS {
            assert!(!html.contains(id), "{p} shows the identifier {id}");
        }
        for q in PAGES {
            assert!(
                html.contains(&format!("href=\"{q}\"")),
                "{p} lacks a link to {q}"
            );
        }
    }
    let dest = get(&gate, "/ui/destinations", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        dest.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;"),
        "{dest}"
    );
    let r = get(&gate, "/v1/status", Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    let r = admin()
        .post(gate.admin_url("/v1/reload"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a session never authorizes a write");
    for (path, ct) in [
        ("/ui/assets/console.css", "text/css"),
        ("/ui/assets/live.js", "text/javascript"),
        ("/ui/report.json", "application/json"),
        ("/ui/report.md", "text/markdown"),
        ("/ui/report.html", "text/html"),
    ] {
        let r = get(&gate, path, Some(&cookie)).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct),
            "{path}"
        );
    }
    let r = get(&gate, "/ui/report.json", Some(&cookie)).await;
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["entity"], "Test Co.");
    assert_eq!(get(&gate, "/ui/nothing", Some(&cookie)).await.status(), 404);
    let put = admin()
        .put(gate.admin_url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);

    // Logout ends the session.
    let r = admin()
        .post(gate.admin_url("/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(get(&gate, "/v1/status", Some(&cookie)).await.status(), 401);
    assert_eq!(get(&gate, "/ui/", Some(&cookie)).await.status(), 303);

    // A new token file (reload) ends the sessions opened with the old token.
    let r = login(&gate, &[("token", TOKEN)], &[]).await;
    let cookie = session_cookie(&r);
    assert_eq!(get(&gate, "/ui/", Some(&cookie)).await.status(), 200);
    std::fs::write(
        gate.dir().join("admin.token"),
        b"the-next-admin-token-0123456789",
    )
    .unwrap();
    let r = admin()
        .post(gate.admin_url("/v1/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(get(&gate, "/ui/", Some(&cookie)).await.status(), 303);
    assert_eq!(get(&gate, "/v1/status", Some(&cookie)).await.status(), 401);
}

/// A client that sends half a login form does not hold the admin connection: it gets 400 once
/// the idle timeout passes, and the connection closes.
#[tokio::test]
async fn a_half_sent_login_form_is_answered_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = GateBuilder::new()
        .file("admin.token", TOKEN.as_bytes())
        .gate_key("admin_token_file = \"admin.token\"")
        .timeouts("idle_seconds = 1")
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(gate.admin).await.unwrap();
    s.write_all(
        b"POST /ui/login HTTP/1.1\r\nhost: gate\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ntoken=cons",
    )
    .await
    .unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    })
    .await
    .expect("the half-sent form holds the connection");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("set-cookie"),
        "{answer}"
    );
}

#[tokio::test]
async fn without_a_token_file_loopback_needs_no_login() {
    let gate = GateBuilder::new().start().await;
    let r = get(&gate, "/ui/", None).await;
    assert_eq!(r.status(), 200);
    assert_secure_headers(&r, "/ui/");
    let html = r.text().await.unwrap();
    assert!(!html.contains("/ui/logout"), "no session, no logout");
    // The login form has nothing to do.
    assert_eq!(get(&gate, "/ui/login", None).await.status(), 303);
    let r = get(&gate, "/", None).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/ui/")
    );
}

/// The whole console in a real browser (tests/browser/console.py). With
/// `CONSOLE_SCREENSHOTS=<dir>` it also saves a screenshot of every page there (docs/console).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_a_real_browser() {
    require_tool("chromium");
    let py = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .unwrap();
    assert!(
        py.success(),
        "Playwright for Python is required (scripts/test installs it)"
    );
    let up = Upstream::http().await;
    let gate = console_gate(&up).await;
    traffic(&gate).await;
    let base = gate.admin_url("").trim_end_matches('/').to_owned();
    let plan = serde_json::json!({
        "base": base,
        "token": TOKEN,
        "proxy": gate.proxy_url(),
        "identifiers": IDENTIFIERS,
        "marks": {"SCC-SOON": "mark-30", "SCC-HALF": "mark-180", "SCC-LONG": "", EVIL_ID: ""},
        "hostile_texts": {"destinations": [EVIL], "approvals": [EVIL, EVIL_ID], "clients": [EVIL]},
        "trigger": {
            "url": "http://api.us.test/v1/patients/110105194912310025",
            "body": r#"{"user_id":"u-2002","diagnosis":"flu"}"#,
            "proxy_authorization": format!("Bearer {CRM_TOKEN}"),
            "status": 451, "reason": "approval_required", "client_name": "crm",
        },
        "allowed_trigger": {
            "url": "http://api.eu.test/v1/customers",
            "body": r#"{"user_id":"u-3003"}"#,
            "proxy_authorization": format!("Bearer {BILLING_TOKEN}"),
        },
        "screenshots": std::env::var("CONSOLE_SCREENSHOTS").ok(),
    });
    let plan_path = gate.dir().join("browser-plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["300", "python3"])
            .arg(script)
            .arg(plan_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser checks failed:\n{text}");
    assert!(text.contains("every check held"), "{text}");
    // The live trigger really went through the gate and was refused there.
    assert!(
        up.received()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("u-2002")),
        "the refused request reached the upstream"
    );
}

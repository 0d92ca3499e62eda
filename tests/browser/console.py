#!/usr/bin/env python3
"""The console in a real browser: headless Debian Chromium driven by Playwright.

Run by tests/it/console.rs against a real transfer-gate binary; it gets a JSON plan (argv[1])
with the admin URL, the token, the proxy and what to expect. It logs in, opens every page,
checks the values against /v1/status, watches a refused request appear live, and fails on any
console error, CSP violation, request to another origin, raw identifier in the DOM or script
run from a hostile value. With "screenshots" set it saves a PNG of every page there.
Exit 0 when every check holds; otherwise it prints every failed check and exits 1.
"""
import json
import sys
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGES = ["/ui/", "/ui/destinations", "/ui/approvals", "/ui/clients", "/ui/decisions", "/ui/report"]

plan = json.load(open(sys.argv[1]))
BASE = plan["base"]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return ok


def fetch(req, proxy=None):
    """The status of `req` (an HTTP error is a status too), through `proxy` or none."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
    try:
        with opener.open(req, timeout=20) as r:
            r.body = r.read()
            return r.status, r.body
    except urllib.error.HTTPError as e:
        return e.code, b""


def admin_json(path):
    status, body = fetch(urllib.request.Request(BASE + path, headers={"Authorization": "Bearer " + plan["token"]}))
    assert status == 200, f"{path}: {status}"
    return json.loads(body)


def status_with_cookie(cookie_header):
    return fetch(urllib.request.Request(BASE + "/v1/status", headers={"Cookie": cookie_header}))[0]


def through_proxy(t):
    """One request through the gate (a refusal the live view must show)."""
    req = urllib.request.Request(t["url"], data=t["body"].encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Proxy-Authorization": t["proxy_authorization"]})
    return fetch(req, plan["proxy"])[0]


def css_str(s):
    """A CSS string literal for an attribute selector (values may hold quotes)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_text(page, selector):
    loc = page.locator(selector)
    return loc.first.inner_text().strip() if loc.count() else None


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    # Records CSP violations in the page (they are also console errors in Chromium).
    context.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page = context.new_page()
    console_errors, requests = [], []
    page.on("console", lambda m: m.type == "error" and console_errors.append(m.type + ": " + m.text))
    page.on("pageerror", lambda e: console_errors.append("pageerror: " + str(e)))
    page.on("request", lambda r: requests.append(r.url))

    def shot(name):
        if plan.get("screenshots"):
            page.screenshot(path=f"{plan['screenshots']}/{name}.png", full_page=True)

    def page_checks(path):
        html = page.content()
        for ident in plan["identifiers"]:
            check(ident not in html, f"{path}: the raw identifier {ident!r} is in the DOM")
        check(page.evaluate("window.__pwned") is None, f"{path}: a hostile value ran a script")
        csp = page.evaluate("window.__csp")
        check(csp == [], f"{path}: CSP violations {csp}")
        for q in PAGES:
            check(page.locator(f'nav a[href="{q}"]').count() == 1, f"{path}: no link to {q}")

    # 1. Without a session every page sends the browser to the login form; a token in the
    #    query string is ignored.
    r = page.goto(BASE + "/ui/?token=" + plan["token"])
    check(page.url.startswith(BASE + "/ui/login"), f"token in a query string: landed on {page.url}")
    check(page.locator("form.login input[name=token]").count() == 1, "no login form")
    check(context.cookies() == [], "a cookie before login")
    shot("login")
    check(all(u.startswith(BASE + "/") for u in requests), f"login: requests {requests}")
    # From here on no URL may hold the token (the one above was put there on purpose).
    requests.clear()

    # 2. A wrong token: 401, no cookie, no data.
    page.fill("input[name=token]", "not-the-token")
    with page.expect_response(lambda resp: resp.url.endswith("/ui/login") and resp.request.method == "POST") as info:
        page.click("form.login button[type=submit]")
    check(info.value.status == 401, f"wrong token answered {info.value.status}")
    check(context.cookies() == [], "a cookie after a wrong token")
    check(page.locator("#thresholds").count() == 0, "data shown after a wrong token")
    # Chromium logs the 401 of the form post as a failed load: that one is expected.
    check(all("401" in e for e in console_errors), f"console errors at login: {console_errors}")
    console_errors.clear()

    # 3. The right token: a session cookie, HttpOnly, SameSite=Strict, holding no token.
    page.fill("input[name=token]", plan["token"])
    page.click("form.login button[type=submit]")
    page.wait_for_url(BASE + "/ui/")
    cookies = context.cookies()
    check(len(cookies) == 1, f"cookies after login: {cookies}")
    if cookies:
        c = cookies[0]
        check(c["httpOnly"] and c["sameSite"] == "Strict", f"cookie flags: {c}")
        check(plan["token"] not in c["value"], "the cookie holds the token")
        check(page.evaluate("document.cookie") == "", "the cookie is readable from script")
    for u in requests:
        check(plan["token"] not in u, f"the token in a URL: {u}")

    status = admin_json("/v1/status")

    # 4. Overview: counts, mechanism and thresholds as /v1/status has them.
    page_checks("/ui/")
    check(cell_text(page, "#entity-all .v") == str(status["entity_subjects"]["all"]), "overview: subjects")
    check(cell_text(page, "#entity-sensitive .v") == str(status["entity_subjects"]["sensitive"]), "overview: sensitive")
    check(cell_text(page, "#required-mechanism .v") == status["required_mechanism"], "overview: mechanism")
    for t in status["thresholds"]:
        row = f'#thresholds tr[data-threshold="{t["name"]}"]'
        check(cell_text(page, row + " td.count") == str(t["count"]), f"overview: threshold {t['name']}")
        if t["limit"] == 1:
            want = "crossed" if t["count"] >= 1 else "not crossed"
            check(page.locator(row).inner_text().find(want) >= 0, f"overview: {t['name']} not shown as {want}")
            check("%" not in page.locator(row).inner_text(), f"overview: {t['name']} shown as a percentage")
    check(page.locator("#forecast tbody tr").count() == len(status["thresholds"]), "overview: forecast rows")
    check(page.locator("#thresholds svg.bar").count() == len(status["thresholds"]), "overview: bars")
    shot("overview")

    # 5. Destinations.
    page.goto(BASE + "/ui/destinations")
    page_checks("/ui/destinations")
    for d in status["destinations"]:
        row = f'#destinations tr[data-destination="{d["name"]}"]'
        check(cell_text(page, row + " td.subjects") == str(d["subjects"]), f"destinations: {d['name']} subjects")
        check(cell_text(page, row + " td.sensitive") == str(d["sensitive_subjects"]), f"destinations: {d['name']} sensitive")
        cells = page.locator(row + " td").all_inner_texts()
        want = [str(d["requests"]["last_hour"]["allowed"]), str(d["requests"]["last_hour"]["refused"]),
                str(d["requests"]["last_day"]["allowed"]), str(d["requests"]["last_day"]["refused"])]
        check(cells[-4:] == want, f"destinations: {d['name']} last hour/day {cells[-4:]} != {want}")
    for text in plan["hostile_texts"]["destinations"]:
        check(text in page.locator("#destinations").inner_text(), f"destinations: {text!r} not shown as text")
    shot("destinations")

    # 6. Approvals, marked at 180 and 30 days.
    page.goto(BASE + "/ui/approvals")
    page_checks("/ui/approvals")
    for a in status["approvals"]:
        sel = f'#approvals tr[data-approval={css_str(a["id"])}]'
        row = page.locator(sel)
        check(row.count() == 1, f"approvals: no row for {a['id']}")
        if row.count():
            check(cell_text(page, sel + " td.days") == str(a["days_to_expiry"]) if a["days_to_expiry"] is not None else True,
                  f"approvals: {a['id']} days")
            want = plan["marks"].get(a["id"], "")
            got = row.get_attribute("class") or ""
            check(got == want, f"approvals: {a['id']} marked {got!r}, want {want!r}")
            check(row.inner_text().find(f"{a['used_subjects']} / {a['max_subjects'] if a['max_subjects'] is not None else '-'}") >= 0,
                  f"approvals: {a['id']} volume used")
    for text in plan["hostile_texts"]["approvals"]:
        check(text in page.locator("#approvals").inner_text(), f"approvals: {text!r} not shown as text")
    shot("approvals")

    # 7. Clients: what each service sent where, with refusals.
    page.goto(BASE + "/ui/clients")
    page_checks("/ui/clients")
    for c in status["clients"]:
        for d in c["destinations"]:
            row = f'#clients tr[data-client="{c["name"]}"][data-destination="{d["destination"]}"]'
            check(cell_text(page, row + " td.allowed") == str(d["allowed"]), f"clients: {c['name']}→{d['destination']} allowed")
            check(cell_text(page, row + " td.refused") == str(d["refused"]), f"clients: {c['name']}→{d['destination']} refused")
    for text in plan["hostile_texts"]["clients"]:
        check(text in page.locator("#clients").inner_text(), f"clients: {text!r} not shown as text")
    shot("clients")

    # 8. Decisions: the recent ones, then a refusal that arrives live, filtered.
    recent = admin_json("/v1/decisions?limit=1000")["decisions"]
    page.goto(BASE + "/ui/decisions")
    page_checks("/ui/decisions")
    check(page.locator("#decisions tbody tr").count() == len(recent), "decisions: not every recent decision is listed")
    page.goto(BASE + "/ui/decisions?decision=block")
    page.wait_for_selector("#live-state.live", timeout=15000)
    before = page.locator("#decisions tbody tr").count()
    t = plan["trigger"]
    code = through_proxy(t)
    check(code == t["status"], f"the live trigger got {code}, want {t['status']}")
    try:
        # wait_for_selector runs in Playwright's own world: a wait_for_function string would be
        # an eval, which the console's CSP rightly refuses.
        page.wait_for_selector("#decisions tbody tr.new", timeout=15000)
        row = page.locator("#decisions tbody tr.new").first.inner_text()
        check(t["reason"] in row and t["client_name"] in row, f"decisions: live row {row!r}")
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check(False, f"decisions: the refusal did not appear live ({e})")
    # An allowed request does not pass the decision=block filter.
    through_proxy(plan["allowed_trigger"])
    page_checks("/ui/decisions (live)")
    shot("decisions")
    # The live rows pass the filter only.
    rows = page.locator("#decisions tbody tr").all_inner_texts()
    check(all("block" in r for r in rows if "No decision" not in r), f"decisions: a row that is not a block: {rows[:3]}")

    # 9. Report: the diagram and three downloads.
    page.goto(BASE + "/ui/report")
    page_checks("/ui/report")
    check(page.locator("svg#dataflow").count() == 1, "report: no diagram")
    for fmt, probe in [("html", lambda s: s.startswith("<!DOCTYPE html>")),
                       ("md", lambda s: s.startswith("#")),
                       ("json", lambda s: json.loads(s)["entity"] == status["entity"])]:
        with page.expect_download() as d:
            page.click(f'a[href="/ui/report.{fmt}"]')
        text = open(d.value.path(), encoding="utf-8").read()
        check(probe(text), f"report: the {fmt} download")
        for ident in plan["identifiers"]:
            check(ident not in text, f"report.{fmt}: the raw identifier {ident!r}")
    shot("report")

    # 10. Pages render without JavaScript.
    nojs = browser.new_context(java_script_enabled=False)
    nojs.add_cookies(context.cookies())
    np = nojs.new_page()
    np.goto(BASE + "/ui/")
    check(np.locator("#thresholds tbody tr").count() == len(status["thresholds"]), "no JavaScript: overview empty")
    np.goto(BASE + "/ui/decisions")
    check(np.locator("#decisions").count() == 1, "no JavaScript: decisions empty")
    nojs.close()

    # 11. Logout ends the session: its cookie no longer reads /v1/*.
    cookie_header = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies())
    check(status_with_cookie(cookie_header) == 200, "the session does not read /v1/status")
    page.goto(BASE + "/ui/")
    page.click("header form button[type=submit]")
    page.wait_for_url(BASE + "/ui/login")
    check(status_with_cookie(cookie_header) == 401, "the session outlived logout")

    for u in requests:
        check(u.startswith(BASE + "/"), f"a request to another origin: {u}")
    check(console_errors == [], f"console errors: {console_errors}")
    print(f"{len(requests)} requests, all to {BASE}", flush=True)
    browser.close()

if failures:
    print(f"{len(failures)} failed checks", flush=True)
    sys.exit(1)
print("every check held", flush=True)

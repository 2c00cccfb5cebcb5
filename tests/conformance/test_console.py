"""The browser console (`GET /`, `src/console/`), driven in a real headless Chromium.

The page signs every data call itself (SigV4 with WebCrypto) with the key typed into its form;
these tests sign in with the administrator key the server wrote, watch an endpoint fall back
when its preferred type has no capacity and return when it comes back, and read the fleet
chart's pixels. They need Debian's `chromium` and `chromium-driver` (scripts/test.sh installs
them) and fail, never skip, when those are missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import struct
import time
import zlib

import pytest

import spw

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PREFERRED = "ml.g6e.2xlarge"
FALLBACK = "ml.m5.xlarge"
ECHO = "echo-model"
WAIT = 90  # seconds: generous, a loaded 2-core machine builds and runs everything at once


# ------------------------------------------------------------------------------------------
# the browser
# ------------------------------------------------------------------------------------------


def _need_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(
            f"headless Chromium is required for the console tests but {missing} is missing: "
            "install Debian's `chromium` and `chromium-driver` (scripts/test.sh does)",
            pytrace=False,
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is required for the console tests: pip install -r tests/requirements.txt", pytrace=False)


@pytest.fixture
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1800",
              "--force-device-scale-factor=1", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: Selenium Manager never looks for one on the network.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    try:
        for entry in driver.get_log("browser"):
            print("[browser]", entry.get("level"), entry.get("message"))
    except Exception:  # noqa: BLE001 (a log that cannot be read is no test failure)
        pass
    driver.quit()


def wait_for(driver, fn, what: str, timeout: float = WAIT):
    """Polls fn(driver) until it returns something truthy; fails naming `what` and the page."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn(driver)
        except Exception as e:  # noqa: BLE001 (a node being replaced by a refresh)
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    body = driver.find_element("tag name", "body").text[:3000]
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n--- page text ---\n{body}")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def sign_in(driver, srv, secret: str | None = None, keys: tuple[str, str] | None = None):
    driver.get(srv.url + "/")
    wait_for(driver, lambda d: d.find_element("id", "signin-form").is_displayed(), "the sign-in form")
    akid, sec = keys or srv.credentials
    driver.find_element("id", "akid").send_keys(akid)
    driver.find_element("id", "secret").send_keys(secret if secret is not None else sec)
    region = driver.find_element("id", "region")
    region.clear()
    region.send_keys(spw.REGION)
    driver.find_element("id", "signin-button").click()


def signed_in(driver):
    return driver.find_element("id", "app").is_displayed()


# ------------------------------------------------------------------------------------------
# PNG pixels (zlib only: no imaging library needed)
# ------------------------------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, list[bytearray]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += chunk
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    i = 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rgb = bytearray()
        for x in range(0, stride, bpp):
            rgb += line[x : x + 3]
        rows.append(rgb)
    return width, height, rows


def hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def count_color(rows, x0: int, x1: int, rgb, tol: int = 12) -> int:
    n = 0
    for row in rows:
        for x in range(x0, x1):
            p = row[3 * x : 3 * x + 3]
            if abs(p[0] - rgb[0]) <= tol and abs(p[1] - rgb[1]) <= tol and abs(p[2] - rgb[2]) <= tol:
                n += 1
    return n


# ------------------------------------------------------------------------------------------
# the server side of the console
# ------------------------------------------------------------------------------------------


def test_assets_are_served_unsigned_with_csp_and_data_is_not(server):
    status, headers, body = server.http("GET", "/", sign=False)
    assert status == 200, (status, body[:200])
    h = {k.lower(): v for k, v in headers.items()}
    assert h["content-type"] == "text/html; charset=utf-8"
    csp = h["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp, csp
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-cache" and h["etag"]
    assert b"/console/app.js" in body
    for path, ctype in (
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/sigv4.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("/console/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
        ("/console/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    ):
        status, headers, body = server.http("GET", path, sign=False)
        h = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and h["content-type"] == ctype and h["content-security-policy"] == csp, (path, status, h)
        assert body
    # revalidation
    status, _, _ = server.http("GET", "/console/app.js", sign=False, headers={"If-None-Match": h["etag"]})
    assert status == 200  # the etag above is the LICENSE's
    _, headers, _ = server.http("GET", "/console/app.js", sign=False)
    etag = {k.lower(): v for k, v in headers.items()}["etag"]
    status, _, _ = server.http("GET", "/console/app.js", sign=False, headers={"If-None-Match": etag})
    assert status == 304
    # an unknown asset is an AWS-shaped 404, not the page
    status, _, body = server.http("GET", "/console/nope.js", sign=False)
    assert status == 404 and json.loads(body)["__type"].endswith("UnknownOperationException"), body
    # the assets still pass the Host check (DNS rebinding)
    status, _, body = server.http("GET", "/", sign=False, headers={"Host": "evil.example"})
    assert status == 403, (status, body)
    # the console is no bypass: its data calls unsigned are refused, as any client's
    status, _, body = server.http("GET", "/_spillway/capacity", sign=False)
    assert status in (400, 403), (status, body)
    status, _, body = server.http(
        "POST", "/", b"{}", {"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"}, sign=False
    )
    assert status in (400, 403), (status, body)
    assert "Endpoints" not in json.loads(body), body
    # POST / still is the AWS APIs, signed
    status, body = server.sagemaker_raw("ListEndpoints", {})
    assert status == 200 and body == {"Endpoints": []}, (status, body)
    # methods other than GET/HEAD on the console's paths are not served unsigned
    status, _, _ = server.http("PUT", "/console/app.js", b"x", sign=False)
    assert status in (400, 403, 405), status


def test_asset_gets_are_not_audited_as_api_calls(server):
    before = server.client("cloudtrail").lookup_events(MaxResults=50)["Events"]
    for _ in range(3):
        assert server.http("GET", "/", sign=False)[0] == 200
        assert server.http("GET", "/console/app.js", sign=False)[0] == 200
    after = server.client("cloudtrail").lookup_events(MaxResults=50)["Events"]
    new = [e for e in after if e["EventId"] not in {b["EventId"] for b in before}]
    # only the second LookupEvents itself may be new (the first may or may not see itself)
    assert all(e["EventName"] == "LookupEvents" for e in new), [e["EventName"] for e in new]
    # the control: an unsigned GET of a path that is no asset is an API call, refused and audited
    assert server.http("GET", "/_spillway/capacity", sign=False)[0] in (400, 403)
    last = spw.poll(
        lambda: [
            e
            for e in server.client("cloudtrail").lookup_events(MaxResults=50)["Events"]
            if e["EventId"] not in {b["EventId"] for b in after} and e["EventName"] != "LookupEvents"
        ],
        what="the audited refusal of the unsigned admin call",
    )
    assert [e["EventName"] for e in last] == ["ListCapacity"], last


# ------------------------------------------------------------------------------------------
# in the browser
# ------------------------------------------------------------------------------------------


def test_the_pages_signer_signs_as_botocore_does(server, browser, monkeypatch):
    """sigv4.js against botocore's SigV4Auth on generated requests: odd path segments and query
    strings (every byte class, UTF-8, repeated keys), headers with spaces, bodies, services."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    import botocore.auth

    rng = random.Random(15)
    chars = "abcXYZ019-._~!$&'()*+,;=:@ %/?#[]é☃\u00a0\"<>`{}|^"

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(lo, hi)))

    cases = []
    for _ in range(150):
        segments = [s for s in (text(1, 8) for _ in range(rng.randint(0, 4))) if s not in (".", "..")]
        method = rng.choice(["GET", "POST"])
        headers = {}
        if method == "POST":
            headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"SageMaker.  List{text(0, 3).encode('ascii', 'ignore').decode()}  Endpoints "}
        cases.append(
            {
                "method": method,
                "segments": segments,
                "query": [[text(0, 6), text(0, 6)] for _ in range(rng.randint(0, 4))],
                "headers": headers,
                "body": text(0, 30) if method == "POST" else "",
                "service": rng.choice(["sagemaker", "monitoring", "spillway"]),
            }
        )
    creds = {"accessKeyId": "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
             "secret": text(40, 40), "region": rng.choice(["us-east-1", "eu-west-3"])}
    when = dt.datetime(2026, 11, 30, 13, 45, 7, tzinfo=dt.timezone.utc)

    browser.get(server.url + "/")
    wait_for(browser, lambda d: js(d, "return typeof SigV4 === 'object'"), "sigv4.js")
    got = browser.execute_async_script(
        "const [cases, creds, ms, done] = arguments;"
        "Promise.all(cases.map((c) => SigV4.sign(c, creds, c.service, new Date(ms))))"
        ".then(done, (e) => done({error: String(e)}));",
        cases, creds, int(when.timestamp() * 1000),
    )
    assert isinstance(got, list), got
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    host = server.url.split("//", 1)[1]
    for case, signed in zip(cases, got):
        assert signed["headers"]["x-amz-date"] == "20261130T134507Z"
        url = server.url + signed["url"]
        req = AWSRequest(method=case["method"], url=url, data=case["body"].encode(), headers=dict(case["headers"]))
        SigV4Auth(Credentials(creds["accessKeyId"], creds["secret"]), case["service"], creds["region"]).add_auth(req)
        assert req.headers["Authorization"] == signed["headers"]["authorization"], (case, signed, host)


def test_a_wrong_secret_shows_the_error_and_no_data(start_server, browser):
    srv = start_server()
    spw.deploy_echo(srv.sm, "secret-ep", model=ECHO)
    sign_in(browser, srv, secret="not-the-secret")
    err = wait_for(
        browser,
        lambda d: d.find_element("id", "signin-error").is_displayed() and d.find_element("id", "signin-error").text,
        "the sign-in error",
    )
    assert "SignatureDoesNotMatch" in err or "signature" in err.lower(), err
    assert not browser.find_element("id", "app").is_displayed()
    assert "secret-ep" not in browser.find_element("tag name", "body").text
    assert js(browser, "return sessionStorage.length") == 0


def test_auth_off_needs_no_sign_in(start_server, browser):
    srv = start_server(config={"auth": {"mode": "none"}})
    spw.deploy_echo(srv.sm, "open-ep", model=ECHO)
    browser.get(srv.url + "/")
    wait_for(browser, lambda d: "open-ep" in d.find_element("id", "endpoint-list").text, "the endpoint list without signing in")
    assert not browser.find_element("id", "signin").is_displayed()
    assert "authentication is off" in browser.find_element("id", "whoami").text


def test_console_shows_the_fallback_and_the_return(start_server, browser):
    srv = start_server(
        capacity={PREFERRED: 0, FALLBACK: 4},
        config={"rebalance": {"enabled": False, "min_runtime_seconds": 1, "max_in_flight": 1}},
        provisioning={"deadline_override_seconds": 30, "health_check_timeout_override_seconds": 20},
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    variant = spw.pooled_variant(ECHO, spw.pools((PREFERRED, 1), (FALLBACK, 2)), count=1)
    sm.create_endpoint_config(EndpointConfigName="fb-cfg", ProductionVariants=[variant])
    sm.create_endpoint(
        EndpointName="fb",
        EndpointConfigName="fb-cfg",
        Tags=[{"Key": "spillway:rebalance", "Value": "enabled"}],
    )
    spw.wait_in_service(sm, "fb", timeout=WAIT)
    in_service = time.time()

    sign_in(browser, srv)
    wait_for(browser, signed_in, "the console after signing in")
    assert js(browser, "return JSON.parse(sessionStorage.getItem('spillway.console.credentials')).accessKeyId") == srv.credentials[0]

    # the list: status and instances per type
    chip = wait_for(
        browser,
        lambda d: d.find_element("css selector", f"#endpoint-list li[data-endpoint='fb'] .chip[data-type='{FALLBACK}']"),
        "the fallback type's count in the endpoint list",
    )
    assert chip.get_attribute("data-in-service") == "1", chip.text
    assert "InService" in browser.find_element("css selector", "#endpoint-list li[data-endpoint='fb'] .badge").text
    assert not browser.find_elements("css selector", f"#endpoint-list li[data-endpoint='fb'] .chip[data-type='{PREFERRED}']")
    # the overview table
    row = browser.find_element("css selector", "#overview-table tr[data-endpoint='fb']")
    assert "InService" in row.text and FALLBACK in row.text

    # the endpoint's page: the event timeline shows the insufficient capacity, then the fallback
    browser.get(srv.url + "/#/endpoints/fb")
    ice = wait_for(
        browser,
        lambda d: d.find_elements("css selector", f"#events-table tr[data-result='InsufficientCapacity'][data-type='{PREFERRED}']"),
        "an InsufficientCapacity event of the preferred type in the timeline",
    )
    assert ice[0].is_displayed()
    wait_for(
        browser,
        lambda d: d.find_elements("css selector", f"#events-table tr[data-kind='LaunchAttempt'][data-result='Launched'][data-type='{FALLBACK}']"),
        "the fallback launch in the timeline",
    )
    # the capacity view: the preferred type is pinned at 0
    wait_for(browser, lambda d: d.find_elements("css selector", f"#capacity-table tr[data-type='{PREFERRED}']"), "the capacity row")
    # the explain text and the cost per hour, from their APIs: the page signs paths and query
    # strings (`/_spillway/cost?since=..&endpoint=..`) as the server checks them
    explain = wait_for(
        browser,
        lambda d: "answered InsufficientCapacity" in d.find_element("id", "explain").text and d.find_element("id", "explain").text,
        "the explain panel's sentences",
    )
    assert f"{PREFERRED} (priority 1)" in explain, explain
    cost = wait_for(browser, lambda d: "per hour now" in d.find_element("id", "cost").text and d.find_element("id", "cost").text, "the cost panel")
    assert FALLBACK in cost, cost
    for panel in ("explain", "cost"):
        errors = browser.find_elements("css selector", f"#{panel} .error")
        assert not errors, (panel, [e.text for e in errors])

    # the fleet chart shows the fallback type, for a while
    wait_for(
        browser,
        lambda d: d.find_elements("css selector", f"#fleet-legend [data-type='{FALLBACK}'][data-latest='1']"),
        "the fleet chart's fallback series",
    )
    x_min = wait_for(browser, lambda d: float(d.find_element("id", "fleet-chart").get_attribute("data-x-min") or 0), "the chart's x range")
    # long enough that the fallback-only part is a good share of the chart (a loaded machine
    # may have taken a while to get here)
    spw.poll(lambda: time.time() - in_service >= 25 and (time.time() - in_service) >= 0.6 * (time.time() - x_min),
             timeout=WAIT, interval=1, what="a long enough fallback period")

    # capacity comes back: the rebalancer moves the fleet to the preferred type
    given_back = time.time()
    srv.set_slots(PREFERRED, 2)
    spw.poll(
        lambda: [(i["instanceType"], i["state"]) for i in srv.instances("fb")] == [(PREFERRED, "InService")],
        timeout=WAIT,
        what="the fleet back on the preferred type",
    )
    moved = time.time()
    wait_for(
        browser,
        lambda d: d.find_elements("css selector", f"#endpoint-list li[data-endpoint='fb'] .chip[data-type='{PREFERRED}'][data-in-service='1']"),
        "the preferred type in the endpoint list",
    )
    # the preferred-only part of the chart grows until it is as long as the fallback's
    spw.poll(lambda: time.time() - moved >= 25 and (time.time() - moved) >= 0.45 * (time.time() - x_min),
             timeout=3 * WAIT, interval=1, what="a long enough preferred period")
    wait_for(
        browser,
        lambda d: d.find_elements("css selector", f"#fleet-legend [data-type='{FALLBACK}'][data-latest='0']")
        and d.find_elements("css selector", f"#fleet-legend [data-type='{PREFERRED}'][data-latest='1']")
        and float(d.find_element("id", "fleet-chart").get_attribute("data-x-max") or 0) >= moved + 20,
        "the chart up to date: the fallback series at 0, the preferred one at 1",
    )

    colors = {
        e.get_attribute("data-type"): e.get_attribute("data-color")
        for e in browser.find_elements("css selector", "#fleet-legend [data-type]")
    }
    assert set(colors) == {PREFERRED, FALLBACK}, colors
    assert colors[PREFERRED] != colors[FALLBACK]
    chart = browser.find_element("id", "fleet-chart")
    x0, x1 = float(chart.get_attribute("data-x-min")), float(chart.get_attribute("data-x-max"))
    png = browser.find_element("css selector", "#fleet-chart canvas").screenshot_as_png
    out = os.environ.get("SPILLWAY_CONSOLE_SCREENSHOT")
    if out:
        browser.save_screenshot(out)
    _, _, rows = decode_png(png)
    # the plot area inside uPlot's canvas (axes are outside it), in CSS pixels (scale factor 1)
    left, top, w, h = (
        int(v)
        for v in js(
            browser,
            "const o = document.querySelector('#fleet-chart .u-over').getBoundingClientRect(), "
            "c = document.querySelector('#fleet-chart canvas').getBoundingClientRect(); "
            "return [o.left - c.left, o.top - c.top, o.width, o.height];",
        )
    )
    plot_rows = rows[top : top + h]

    def column(t: float) -> int:
        return left + int((t - x0) / (x1 - x0) * w)

    # 5 s periods: keep one period and a little more away from each change
    fb_from, fb_to = column(max(x0, in_service + 7)), column(given_back - 7)
    pr_from, pr_to = column(moved + 12), column(x1) - 2
    assert fb_to - fb_from >= 20 and pr_to - pr_from >= 20, (fb_from, fb_to, pr_from, pr_to, x0, x1)
    pref, fall = hex_rgb(colors[PREFERRED]), hex_rgb(colors[FALLBACK])
    counts = {
        "fallback period: fallback colour": count_color(plot_rows, fb_from, fb_to, fall) / ((fb_to - fb_from) * h),
        "fallback period: preferred colour": count_color(plot_rows, fb_from, fb_to, pref) / ((fb_to - fb_from) * h),
        "preferred period: preferred colour": count_color(plot_rows, pr_from, pr_to, pref) / ((pr_to - pr_from) * h),
        "preferred period: fallback colour": count_color(plot_rows, pr_from, pr_to, fall) / ((pr_to - pr_from) * h),
    }
    # one instance fills at least a third of the plot's height (the y axis goes to 1 or, with
    # the surge instance of the move, 2); the other type is absent
    assert counts["fallback period: fallback colour"] > 0.3, counts
    assert counts["fallback period: preferred colour"] < 0.01, counts
    assert counts["preferred period: preferred colour"] > 0.3, counts
    assert counts["preferred period: fallback colour"] < 0.01, counts

    # sign out clears the key
    browser.find_element("id", "signout").click()
    wait_for(browser, lambda d: d.find_element("id", "signin-form").is_displayed(), "the sign-in form after signing out")
    assert js(browser, "return sessionStorage.getItem('spillway.console.credentials')") is None


def test_countdowns_tick_and_a_refused_call_shows_the_aws_error(start_server, browser):
    # a long back-off, so the preferred type's next probe is a minute away
    srv = start_server(
        capacity={PREFERRED: 0, FALLBACK: 4},
        provisioning={"ice_backoff_initial_ms": 120000, "ice_backoff_max_ms": 120000},
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    variant = spw.pooled_variant(ECHO, spw.pools((PREFERRED, 1), (FALLBACK, 2)), count=1)
    spw.deploy(sm, "cd", [variant])
    spw.wait_in_service(sm, "cd", timeout=WAIT)

    sign_in(browser, srv)
    wait_for(browser, signed_in, "the console after signing in")
    cell = f"#capacity-table tr[data-type='{PREFERRED}'][data-availability='BackingOff'] td.countdown"

    def left(d):
        text = d.find_element("css selector", cell).text
        if text.endswith(" s") and " min " in text:
            m, _, sec, _ = text.split()
            return int(m) * 60 + int(sec)
        return int(text.split()[0]) if text.endswith(" s") else None

    first = wait_for(browser, left, "a back-off countdown for the preferred type")
    assert 30 < first <= 120, first
    time.sleep(3)
    later = wait_for(browser, left, "the countdown again")
    assert 0 < later < first, (first, later)

    # a reader whose policy leaves out the capacity view sees AWS's refusal in that panel
    iam = srv.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="console-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["sagemaker:ListEndpoints", "sagemaker:DescribeEndpoint", "spillway:ListInstances"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    browser.find_element("id", "signout").click()
    wait_for(browser, lambda d: d.find_element("id", "signin-form").is_displayed(), "the sign-in form")
    sign_in(browser, srv, keys=(key["AccessKeyId"], key["SecretAccessKey"]))
    wait_for(browser, signed_in, "the console for the reader")
    wait_for(browser, lambda d: "cd" in d.find_element("id", "endpoint-list").text, "the endpoint list for the reader")
    note = wait_for(
        browser,
        lambda d: d.find_element("id", "capacity-note").is_displayed() and d.find_element("id", "capacity-note").text,
        "the capacity panel's refusal",
    )
    assert note.startswith("AccessDeniedException: ") and "spillway:ListCapacity" in note, note
    assert not browser.find_elements("css selector", "#capacity-table tbody tr")

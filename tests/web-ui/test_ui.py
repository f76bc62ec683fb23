"""Warren's management web UI in headless Chromium (run by run.sh).

Each step does what a user would do and asserts what the user would see:
log in, watch the rates move, find a queue by filter, publish, get, move
and purge messages, create a user and log in as it, import definitions,
close a connection. Every wait is an explicit wait on a condition with a
timeout; a screenshot of each page goes to UI_ARTEFACTS. Ends with the
line `N passed, N failed`.
"""

import base64
import json
import os
import pathlib
import re
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["WARREN_URL"]
ALARM_URL = os.environ.get("WARREN_ALARM_URL")
ART = pathlib.Path(os.environ["UI_ARTEFACTS"])
WORK = pathlib.Path(os.environ.get("UI_WORK", tempfile.mkdtemp()))
WAIT = 20  # seconds, the longest any one condition may take

# Nothing may look for or download a browser or driver.
os.environ["SE_OFFLINE"] = "true"


# ------------------------------------------------------------------ API


def api(method, path, body=None, user="guest", password="guest"):
    """Calls the management API directly (for set-up and cross-checks)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:200]!r}") from e


# ------------------------------------------------------------------ browser


def start_browser():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=WORK)}",
        "--window-size=1280,1000",
    ]:
        opts.add_argument(flag)
    opts.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(ART),
            "download.prompt_for_download": False,
        },
    )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path="/usr/bin/chromedriver", log_output=str(WORK / "chromedriver.log"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(30)
    # Downloads in headless mode go where the test can see them.
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(ART)})
    return d


D = None


def wait(cond, what, timeout=WAIT):
    """Waits until cond(driver) is truthy; fails naming `what`."""
    try:
        # A refresh replaces elements under the test's feet: a stale or
        # missing element means "not yet", not a failure.
        return WebDriverWait(
            D, timeout, poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
        ).until(lambda d: cond(d))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def el(css):
    return D.find_element(By.CSS_SELECTOR, css)


def els(css):
    return D.find_elements(By.CSS_SELECTOR, css)


def text_of(css):
    found = els(css)
    return found[0].text if found else ""


def visible_text(css, what=None):
    """Waits for an element with text and returns the text."""
    return wait(lambda d: text_of(css).strip() or None, what or css)


def shot(name):
    D.save_screenshot(str(ART / f"{name}.png"))


def go(hash_path, ready_css):
    D.get(f"{URL}/#/{hash_path}")
    wait(lambda d: els(ready_css), f"{ready_css} on #/{hash_path}")


def click(css, what=None):
    """Clicks the first element matching css. The lists refresh on a
    timer: one that replaces the element between finding and clicking it
    makes the click stale, and wait() tries again with the new one."""

    def attempt(d):
        found = els(css)
        if not found:
            return False
        found[0].click()
        return True

    wait(attempt, what or css)


def type_into(css, value):
    box = el(css)
    box.clear()
    box.send_keys(value)


def confirm_dialog():
    wait(lambda d: el("#confirm").get_attribute("open") is not None, "the confirmation dialog")
    el("#confirm-ok").click()
    wait(lambda d: el("#confirm").get_attribute("open") is None, "the dialog to close")


def login(user, password):
    D.get(URL + "/")
    if els("#logout") and el("#top").is_displayed():
        el("#logout").click()
    wait(lambda d: els("#login-form"), "the login form")
    type_into("#login-user", user)
    type_into("#login-password", password)
    el("#login-submit").click()
    wait(lambda d: el("#who").text == user and el("#top").is_displayed(), f"{user} logged in")


def rate_value(series):
    """The legend's current value of a chart series ("123/s" -> 123.0)."""
    t = text_of(f'#overview-rates .value[data-series="{series}"]')
    m = re.match(r"^([\d,.]+)/s$", t)
    return float(m.group(1).replace(",", "")) if m else None


# ------------------------------------------------------------------ steps


def step_login():
    D.get(URL + "/")
    wait(lambda d: els("#login-form"), "the login form")
    shot("01-login")
    type_into("#login-user", "guest")
    type_into("#login-password", "wrong")
    el("#login-submit").click()
    msg = visible_text("#login-status", "the login refusal")
    assert "Login failed" in msg, msg
    # The page handled it: no browser dialog, still on the form.
    assert els("#login-form")
    login("guest", "guest")
    nav = [a.text for a in els("#nav a")]
    assert nav == ["Overview", "Connections", "Channels", "Exchanges", "Queues", "Admin"], nav


def step_rates_move():
    go("", "#overview-rates")
    # A shorter refresh interval, chosen as a user would.
    Select(el("#refresh")).select_by_value("2")
    wait(lambda d: (rate_value("publish") or 0) > 0, "a publish rate above zero")
    wait(lambda d: (rate_value("confirm") or 0) > 0, "a confirm rate above zero")
    wait(lambda d: (rate_value("deliver_get") or 0) > 0, "a deliver rate above zero")
    line = lambda: (els('#overview-rates path[data-series="publish"]') or [None])[0]
    first = wait(lambda d: line() and line().get_attribute("d"), "the publish line")
    wait(lambda d: line().get_attribute("d") != first, "the publish line to move")
    # The chart keeps its size while it refreshes: no layout jumps.
    box = el("#overview-rates .plot").size
    wait(lambda d: line().get_attribute("d") != first, "another sample")
    assert el("#overview-rates .plot").size == box
    assert text_of("#total-queues") != "", "object totals"
    mem = visible_text("#node-memory", "node memory")
    assert "used of" in mem and "limit" in mem, mem
    disk = visible_text("#node-disk", "node disk")
    assert "limit" in disk, disk
    assert "amqp" in text_of("#listeners"), text_of("#listeners")
    # A span of one minute, and a few more samples, for the screenshot.
    Select(el("#chart-window")).select_by_value("1")
    wait(lambda d: line().get_attribute("d").count("L") >= 4, "five samples on the chart")
    shot("02-overview")


def step_filter_queues():
    for i in range(30):
        api("PUT", f"/api/queues/%2F/ui-q-{i:03d}", {"durable": False})
    api("PUT", "/api/queues/%2F/orders.pending", {"durable": True})
    api("PUT", "/api/queues/%2F/orders.archive", {"durable": True})
    go("queues", "#queues tbody tr")
    Select(el("#queues-size")).select_by_value("20")
    wait(lambda d: "Page 1 of" in text_of("#queues .pager"), "the pager")
    total = text_of("#queues-count")
    assert re.search(r"1–20 of \d+ queues", total), total
    click("#queues-next")
    wait(lambda d: "Page 2 of" in text_of("#queues .pager"), "page 2")
    type_into("#queues-filter", "orders.pend")
    wait(
        lambda d: [a.text for a in els("#queues tbody td a")] == ["orders.pending"],
        "only orders.pending in the filtered list",
    )
    assert "filtered from" in text_of("#queues-count"), text_of("#queues-count")
    # Sort by a column header, with the keyboard.
    header = el('#queues th button.sort')
    header.send_keys(Keys.ENTER)
    wait(lambda d: els('#queues th[aria-sort]'), "a sorted column")
    shot("03-queues-filtered")


def queue_count(css):
    t = text_of(css).replace(",", "")
    return int(t) if t.isdigit() else None


def step_publish_and_get():
    go("queues", "#queues-filter")
    type_into("#queues-filter", "orders.pending")
    wait(lambda d: [a.text for a in els("#queues tbody td a")] == ["orders.pending"], "the queue link")
    click("#queues tbody td a", "the queue link")
    wait(lambda d: els("#qpub-form") and queue_count("#queue-total") is not None, "the queue page")
    payload = "hello from the browser ✓"
    type_into("#qpub-payload", payload)
    Select(el("#qpub-mode")).select_by_value("2")
    el("#qpub-submit").click()
    wait(lambda d: "Message published." in text_of("#qpub-result"), "the publish result")
    wait(lambda d: queue_count("#queue-ready") == 1, "one ready message")
    Select(el("#get-ackmode")).select_by_value("ack_requeue_true")
    el("#get-submit").click()
    got = visible_text("#get-result pre.payload", "the message got")
    assert got == payload, got
    # Requeued: still there.
    wait(lambda d: queue_count("#queue-ready") == 1, "the message requeued")
    shot("04-queue-detail")


def step_move():
    before = api("GET", "/api/queues/%2F/orders.archive")["messages"]
    type_into("#move-destination", "orders.archive")
    el("#move-submit").click()
    wait(lambda d: "Moved 1 message to orders.archive" in text_of("#move-result"), "the move result")
    wait(lambda d: queue_count("#queue-total") == 0, "the source empty")
    assert api("GET", "/api/queues/%2F/orders.archive")["messages"] == before + 1


def step_purge():
    for n in range(3):
        api("POST", "/api/exchanges/%2F/amq.default/publish",
            {"properties": {}, "routing_key": "orders.pending", "payload": f"m{n}", "payload_encoding": "string"})
    wait(lambda d: queue_count("#queue-total") == 3, "three messages on the page")
    el("#purge").click()
    confirm_dialog()
    wait(lambda d: queue_count("#queue-total") == 0, "the queue purged")
    assert api("GET", "/api/queues/%2F/orders.pending")["messages"] == 0
    # Ack mode on an empty queue says so.
    el("#get-submit").click()
    wait(lambda d: "The queue is empty." in text_of("#get-result"), "the empty get")


def step_user():
    go("admin/users", "#users tbody tr")
    type_into("#new-user-name", "viewer")
    type_into("#new-user-password", "viewer-pw")
    # The default tag is management; full permissions on "/".
    el("#new-user-submit").click()
    wait(lambda d: "viewer" in [a.text for a in els("#users tbody td a")], "the new user in the list")
    shot("05-users")
    login("viewer", "viewer-pw")
    nav = [a.text for a in els("#nav a")]
    assert "Admin" not in nav, nav
    go("", "#overview-rates")
    wait(lambda d: "Node details need the monitoring or administrator tag" in text_of("#node"), "no node details")
    shot("06-management-user-overview")
    go("admin/users", "#not-allowed")
    assert "Only users tagged administrator" in text_of("#not-allowed")
    D.get(f"{URL}/#/admin/vhosts/%2F")
    wait(lambda d: els("#not-allowed"), "the refusal on a vhost page")
    # Another user's connection: the API answers 401, and the page shows
    # its reason as a message, not a crash.
    other = api("GET", "/api/connections")[0]["name"]
    D.get(f"{URL}/#/connections/{urllib.parse.quote(other, safe='')}")
    wait(lambda d: "Not allowed: User not authorised to access object." in text_of(".page-error"),
         "the API's refusal shown in the page")
    assert el("#top").is_displayed() and el("#who").text == "viewer"
    go("connections", "#connections tbody tr")
    wait(lambda d: "No connections." in text_of("#connections tbody"), "no other user's connections")
    shot("07-management-user-denied")
    login("guest", "guest")


def step_import_definitions():
    defs = {
        "queues": [{"name": "imported-from-file", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [{"name": "imported.x", "vhost": "/", "type": "topic", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": "imported.x", "vhost": "/", "destination": "imported-from-file",
                      "destination_type": "queue", "routing_key": "a.#", "arguments": {}}],
        "policies": [{"vhost": "/", "name": "orders-ttl", "pattern": "^orders\\.", "apply-to": "queues",
                      "definition": {"message-ttl": 600000}, "priority": 1}],
    }
    path = WORK / "definitions-to-import.json"
    path.write_text(json.dumps(defs))
    go("admin/definitions", "#import-form")
    el("#import-file").send_keys(str(path))
    el("#import-submit").click()
    wait(lambda d: "Imported definitions-to-import.json" in text_of("#import-result"), "the import result")
    el("#export").click()
    wait(lambda d: "Downloaded:" in text_of("#export-result"), "the export result")
    wait(lambda d: list(ART.glob("warren-definitions-*.json")), "the downloaded file")
    exported = json.loads(next(ART.glob("warren-definitions-*.json")).read_text())
    assert any(q["name"] == "imported-from-file" for q in exported["queues"])
    shot("08-definitions")
    go("queues", "#queues-filter")
    type_into("#queues-filter", "imported")
    wait(lambda d: [a.text for a in els("#queues tbody td a")] == ["imported-from-file"], "the imported queue")
    click("#queues tbody td a", "the queue link")
    wait(lambda d: "imported.x" in text_of("#queue-bindings"), "the imported binding")
    go("admin/policies", "#policies-list table")
    assert "orders-ttl" in text_of("#policies-list")
    shot("09-policies")
    D.get(f"{URL}/#/queues/%2F/orders.pending")
    wait(lambda d: "message-ttl" in text_of("#queue-policy"), "the effective policy on orders.pending")
    shot("10-queue-with-policy")


def step_close_connection():
    go("connections", "#connections tbody td a")
    before = len(api("GET", "/api/connections"))
    assert before >= 1
    shot("11-connections")
    click("#connections tbody td a", "the connection link")
    wait(lambda d: "product" in text_of("#client-properties"), "the client properties")
    name = re.sub(r"^Connection\s*", "", el("h1").text)
    shot("12-connection-detail")
    type_into("#close-reason", "closed by the web UI test")
    el("#close-connection").click()
    confirm_dialog()
    wait(lambda d: els("#gone"), "the connection gone")
    wait(lambda d: all(c["name"] != name for c in api("GET", "/api/connections")), "the API to drop it")


def step_other_pages():
    go("channels", "#channels tbody tr")
    shot("13-channels")
    go("exchanges", "#exchanges tbody td a")
    shot("14-exchanges")
    D.get(f"{URL}/#/exchanges/%2F/imported.x")
    wait(lambda d: "imported-from-file" in text_of("#exchange-bindings-source"), "the exchange's bindings")
    shot("15-exchange-detail")
    go("admin/vhosts", "#vhosts tbody td a")
    shot("16-vhosts")
    D.get(f"{URL}/#/admin/users/viewer")
    wait(lambda d: "/" in text_of("#user-permissions"), "viewer's permissions")
    shot("17-user-detail")
    go("admin/limits", "#vhost-limits-list")
    shot("18-limits")
    # Narrow window and the dark theme.
    D.set_window_size(420, 900)
    go("queues", "#queues tbody tr")
    shot("19-queues-narrow")
    D.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    go("", "#overview-rates path")
    shot("20-overview-narrow-dark")
    D.set_window_size(1280, 1000)
    D.get(URL + "/#/")
    wait(lambda d: els("#overview-rates path"), "the overview again")
    shot("21-overview-dark")
    D.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def step_alarm_banner():
    """A broker whose disk alarm is raised says so on every page."""
    assert ALARM_URL, "run.sh starts a second broker with its disk alarm raised"
    D.get(ALARM_URL + "/")
    wait(lambda d: els("#login-form"), "the alarm broker's login form")
    type_into("#login-user", "guest")
    type_into("#login-password", "guest")
    el("#login-submit").click()
    wait(lambda d: el("#alarm").is_displayed() and "disk alarm" in el("#alarm").text, "the alarm banner")
    wait(lambda d: "Disk alarm: publishers are blocked." in text_of("#node-alarm"), "the node's alarm")
    assert "ALARM" in text_of("#node-disk"), text_of("#node-disk")
    shot("22-disk-alarm")
    D.get(ALARM_URL + "/#/queues")
    wait(lambda d: els("#queues") and el("#alarm").is_displayed(), "the banner on another page")


def step_no_script_errors():
    entries = D.get_log("browser")
    bad = [
        e["message"] for e in entries
        if e["level"] == "SEVERE"
        # The API's refusals (the wrong password, the management user's
        # 401s, the closed connection's 404) and the alarm check's 503 are
        # expected and shown in the page.
        and not re.search(r"Failed to load resource: the server responded with a status of (401|404)", e["message"])
        and not re.search(r"/api/health/checks/alarms - Failed to load resource: .* 503", e["message"])
    ]
    refused = [e["message"] for e in entries if "Content Security Policy" in e["message"]]
    assert not refused, refused
    assert not bad, bad


STEPS = [
    step_login,
    step_rates_move,
    step_filter_queues,
    step_publish_and_get,
    step_move,
    step_purge,
    step_user,
    step_import_definitions,
    step_close_connection,
    step_other_pages,
    step_alarm_banner,
    step_no_script_errors,
]


def main():
    global D
    ART.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    D = start_browser()
    passed = failed = 0
    try:
        for step in STEPS:
            t0 = time.monotonic()
            try:
                step()
                passed += 1
                print(f"ok   {step.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            except Exception:  # noqa: BLE001 - every failure is reported and counted
                failed += 1
                print(f"FAIL {step.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
                traceback.print_exc()
                try:
                    shot(f"FAILED-{step.__name__}")
                except Exception:  # noqa: BLE001
                    pass
    finally:
        D.quit()
    print(f"web UI: {time.monotonic() - started:.0f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Drives the dashboard in a real headless Chromium against the real binaries.

Starts command-service and query-service (from target/debug unless --bin-dir
says otherwise) on free ports with temporary data directories, query-service
with its dashboard on (`--web-listen`), command-service allowing the
dashboard's origin (`--cors-origin`). Then, through the page only: creates and
places an order with the form and sees it in the recent list and in the
analytics charts' data; sees a refused command's gRPC error text; opens a
draft's detail and sees an AddItem made from a second page arrive live
(WatchOrder) with its event (ListOrderEvents); ships and cancels through the
form; checks the status panel. With --screenshot FILE it adds a few orders
and saves a screenshot of the dashboard.

Chromium is the Debian package (`apt-get install chromium`), driven by
Playwright from PyPI (`pip install playwright`); no browser is downloaded.
Prints 'N passed, N failed'; exits non-zero on any failure.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(?<!metrics )listening on (\S+?)(?:[\s\",]|$)")
DASHBOARD = re.compile(r"dashboard on (http://\S+?/)")
TIMEOUT_MS = 10_000


class Service:
    """A service process; its log is kept, and the bound addresses read from it."""

    def __init__(self, binary, args, wait_for=("grpc",)):
        self.lines = []
        self.proc = subprocess.Popen(
            [str(binary), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NO_COLOR": "1"})
        self.found = {}
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                for name, pattern in (("grpc", LISTENING), ("web", DASHBOARD)):
                    match = pattern.search(line)
                    if match and name not in self.found:
                        self.found[name] = match.group(1)
                if all(n in self.found for n in wait_for):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or not all(n in self.found for n in wait_for):
            self.stop()
            raise RuntimeError(f"{binary} did not start:\n" + "\n".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


def free_port():
    """A port free now, for the dashboard: command-service must know its origin first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(page, name, **fields):
    """Fills the command form (`order`, `customer`, `sku`, ...) and clicks a button;
    returns the result line once it is no longer pending."""
    for field, value in fields.items():
        page.fill(f"#f-{field}", str(value))
    page.click(f"[data-command={name}]")
    result = page.locator("#f-result")
    expect(result).not_to_have_class("pending", timeout=TIMEOUT_MS)
    return result


def chart_points(page, chart):
    return json.loads(page.get_attribute(f"#chart-{chart}", "data-points") or "[]")


def wait_for_points(page, chart, expected):
    """Waits until the chart's data equals `expected` ([[label, value], ...])."""
    page.wait_for_function(
        "([id, want]) => document.getElementById(id).dataset.points === want",
        arg=[f"chart-{chart}", json.dumps(expected, separators=(",", ":"))],
        timeout=TIMEOUT_MS)


def scenario(page, second, screenshot):
    results = []

    def check(name, fn):
        started = time.monotonic()
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name} ({time.monotonic() - started:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, then go on
            results.append((name, e))
            print(f"FAIL {name}: {e}", flush=True)
            traceback.print_exc()

    def page_loads_and_reports_a_connected_projection():
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
        expect(page.locator("#status-connected")).to_have_text("connected", timeout=TIMEOUT_MS)
        expect(page.locator("#status-error")).to_be_hidden()
        expect(page.locator("#status-parked")).to_have_text("0 (skipped 0)")
        expect(page.locator("#status-rebuild")).to_have_text("no")

    def create_and_place_through_the_form():
        result = command(page, "create", order="dash-1", customer="cust-a", currency="EUR",
                         sku="widget", qty=3, price=250)
        expect(result).to_have_text(re.compile(r"^create: order dash-1 at version 1\b"))
        result = command(page, "place", order="dash-1")
        expect(result).to_have_text(re.compile(r"^place: order dash-1 at version 2\b"))

    def the_order_appears_in_the_recent_list():
        row = page.locator('tr[data-order-id="dash-1"]')
        expect(row).to_contain_text("placed", timeout=TIMEOUT_MS)
        expect(row).to_contain_text("7.50")
        expect(row).to_contain_text("cust-a")

    def the_order_is_in_the_analytics_charts_data():
        wait_for_points(page, "products", [["widget", 3]])
        wait_for_points(page, "status", [["draft", 0], ["placed", 1], ["shipped", 0],
                                         ["cancelled", 0]])
        daily = chart_points(page, "daily")
        assert len(daily) == 1 and daily[0][1] == 750, daily
        assert daily[0][0] == time.strftime("%Y-%m-%d", time.gmtime()), daily
        expect(page.locator("#kpi-revenue")).to_have_text("7.50")
        expect(page.locator("#kpi-aov")).to_have_text("7.50")

    def a_refused_command_shows_the_grpc_error_text():
        result = command(page, "add", order="dash-1", sku="extra", qty=1, price=1)
        expect(result).to_have_class("error")
        expect(result).to_have_text(re.compile(
            r"^add refused: FailedPrecondition: .*Draft"))
        result = command(page, "create", order="bad id!", customer="cust-a")
        expect(result).to_have_text(re.compile(r"^create refused: InvalidArgument: order_id"))

    def the_detail_follows_a_later_add_item_live():
        result = command(page, "create", order="dash-2", customer="cust-b", currency="USD",
                         sku="gadget", qty=1, price=100)
        expect(result).to_have_class("ok")
        page.locator('tr[data-order-id="dash-2"]').click(timeout=TIMEOUT_MS)
        detail = page.locator("#detail")
        expect(detail).to_have_attribute("data-version", "1", timeout=TIMEOUT_MS)
        expect(page.locator("#detail-live")).to_be_visible()
        expect(page.locator("#detail-events li")).to_have_count(1)
        # From another page: this one learns of it only through its WatchOrder stream.
        second.goto(page.url)
        other = command(second, "add", order="dash-2", sku="gizmo", qty=2, price=50)
        expect(other).to_have_text(re.compile(r"^add: order dash-2 at version 2\b"))
        expect(detail).to_have_attribute("data-version", "2", timeout=TIMEOUT_MS)
        expect(page.locator('#detail-lines tr[data-sku="gizmo"]')).to_contain_text("$0.50")
        expect(page.locator('#detail-events li[data-type="itemAdded"]')).to_contain_text(
            "added 2 × gizmo")
        expect(page.locator('[data-fact="total"] dd')).to_have_text("$2.00")

    def ship_and_cancel_through_the_form():
        result = command(page, "ship", order="dash-1", carrier="DHL", tracking="JD01")
        expect(result).to_have_text(re.compile(r"^ship: order dash-1 at version 3\b"))
        expect(page.locator('tr[data-order-id="dash-1"]')).to_contain_text(
            "shipped", timeout=TIMEOUT_MS)
        result = command(page, "cancel", order="dash-2", reason="changed my mind")
        expect(result).to_have_text(re.compile(r"^cancel: order dash-2 at version 3\b"))
        expect(page.locator("#detail")).to_have_attribute(
            "data-status", "cancelled", timeout=TIMEOUT_MS)
        expect(page.locator('#detail-events li[data-type="orderCancelled"]')).to_contain_text(
            "changed my mind")

    def the_status_panel_shows_the_projection_caught_up():
        # create, place, create, add, ship, cancel: six events.
        expect(page.locator("#status-applied")).to_have_text("6", timeout=TIMEOUT_MS)
        expect(page.locator("#status-head")).to_have_text("6", timeout=TIMEOUT_MS)
        expect(page.locator("#status-lag")).to_have_text("0")
        expect(page.locator("#status-connected")).to_have_text("connected")
        expect(page.locator("#status-last-applied")).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        expect(page.locator("#status-error")).to_be_hidden()
        expect(page.locator("#status-parked")).to_have_text("0 (skipped 0)")
        expect(page.locator("#status-rebuild")).to_have_text("no")

    def the_filter_and_paging_narrow_the_list():
        page.select_option("#orders-status", "3")
        expect(page.locator("#orders-body tr")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(page.locator('tr[data-order-id="dash-1"]')).to_be_visible()
        for i in range(10):
            command(second, "create", order=f"page-{i}", customer="cust-p", sku="bolt",
                    qty=1, price=10)
        page.select_option("#orders-status", "0")
        expect(page.locator("#orders-body tr")).to_have_count(10, timeout=TIMEOUT_MS)
        page.click("#orders-next")
        expect(page.locator("#orders-page")).to_have_text("page 2")
        expect(page.locator("#orders-body tr")).to_have_count(2, timeout=TIMEOUT_MS)
        expect(page.locator('tr[data-order-id="dash-1"]')).to_be_visible()
        page.click("#orders-prev")
        expect(page.locator('tr[data-order-id="page-9"]')).to_be_visible(timeout=TIMEOUT_MS)

    check("the page loads and reports a connected projection",
          page_loads_and_reports_a_connected_projection)
    check("create and place through the form", create_and_place_through_the_form)
    check("the order appears in the recent list", the_order_appears_in_the_recent_list)
    check("the order is in the analytics charts' data", the_order_is_in_the_analytics_charts_data)
    check("a refused command shows the gRPC error text",
          a_refused_command_shows_the_grpc_error_text)
    check("the detail follows a later AddItem live", the_detail_follows_a_later_add_item_live)
    check("ship and cancel through the form", ship_and_cancel_through_the_form)
    check("the status panel shows the projection caught up",
          the_status_panel_shows_the_projection_caught_up)
    check("the status filter and paging narrow the list", the_filter_and_paging_narrow_the_list)
    if screenshot:
        check("screenshot", lambda: take_screenshot(page, second, screenshot))
    return results


def take_screenshot(page, second, path):
    """A few more orders in every status, an order's detail open, then the picture."""
    catalogue = [("apple", 50), ("pear", 120), ("plum", 80), ("fig", 300), ("kiwi", 60)]
    for i in range(8):
        sku, price = catalogue[i % len(catalogue)]
        order = f"ord-{100 + i}"
        command(second, "create", order=order, customer=f"cust-{i % 3 + 1}", currency="USD",
                sku=sku, qty=i % 4 + 1, price=price)
        sku2, price2 = catalogue[(i + 2) % len(catalogue)]
        command(second, "add", order=order, sku=sku2, qty=2, price=price2)
        if i % 4 != 3:
            command(second, "place", order=order)
        if i % 4 == 0:
            command(second, "ship", order=order, carrier="UPS", tracking=f"1Z{i:04}")
        if i == 5:
            command(second, "cancel", order=order, reason="out of stock")
    page.select_option("#orders-status", "0")
    page.locator('tr[data-order-id="ord-107"]').click(timeout=TIMEOUT_MS)
    expect(page.locator("#detail")).to_have_attribute("data-version", "2", timeout=TIMEOUT_MS)
    expect(page.locator("#status-lag")).to_have_text("0", timeout=TIMEOUT_MS)
    page.fill("#f-order", "ord-107")
    page.evaluate("document.getElementById('f-result').textContent = ''")
    page.wait_for_timeout(1500)  # one more status poll, so every panel shows the same moment
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default=str(REPO / "target" / "debug"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", help="save a screenshot of the dashboard here")
    args = parser.parse_args()
    bin_dir = Path(args.bin_dir)

    web_port = free_port()
    origin = f"http://127.0.0.1:{web_port}"
    services, results, console = [], [], []
    with tempfile.TemporaryDirectory(prefix="orders-dash-") as tmp:
        try:
            command_service = Service(bin_dir / "command-service", [
                "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/command",
                "--cors-origin", origin])
            services.append(command_service)
            query_service = Service(bin_dir / "query-service", [
                "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/query",
                "--command-endpoint", f"http://{command_service.found['grpc']}",
                "--web-listen", f"127.0.0.1:{web_port}"], wait_for=("grpc", "web"))
            services.append(query_service)
            url = query_service.found["web"]
            started = time.monotonic()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium,
                                             args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 1440, "height": 1000})
                page, second = context.new_page(), context.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"page error: {e}"))
                page.goto(url)
                results = scenario(page, second, args.screenshot)
                browser.close()
            print(f"browser scenario took {time.monotonic() - started:.1f} s")
        finally:
            codes = [s.stop() for s in reversed(services)]
    failed = [name for name, error in results if error]
    if any(code != 0 for code in codes):
        results.append((f"services exited with {codes}", True))
        failed.append(results[-1][0])
    if failed:
        print("page console:\n  " + "\n  ".join(console or ["(empty)"]))
        for service in services:
            print(f"--- {service.proc.args[0]} log (last 30 lines)")
            print("\n".join(service.lines[-30:]))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

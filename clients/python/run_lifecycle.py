"""Runs an order lifecycle from Python against the real binaries.

Starts command-service and query-service (from target/debug unless --bin-dir
says otherwise) on free ports with temporary data directories and bearer tokens
switched on, then drives them with the client generated from proto/:
create -> add -> place -> ship, read-your-writes queries, business-rule and
auth errors, and the event stream. Prints 'N passed, N failed'; exits non-zero
on any failure.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import orders_client  # noqa: E402

LISTENING = re.compile(r"(?<!metrics )listening on (\S+?)(?:[\s\",]|$)")
COMMAND_TOKEN = "py-command-token"
SUBSCRIBE_TOKEN = "py-subscribe-token"
QUERY_TOKEN = "py-query-token"


class Service:
    """A service process; its log is kept, and the bound address read from it."""

    def __init__(self, binary, args, env=None):
        self.lines = []
        self.proc = subprocess.Popen(
            [str(binary), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.addr = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                match = LISTENING.search(line)
                if match and self.addr is None:
                    self.addr = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or self.addr is None:
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


def expect_code(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        return e.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def lifecycle(pb, client, command_addr):
    results = []

    def check(name, fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, e))
            print(f"FAIL {name}: {e}")
            traceback.print_exc()

    state = {}

    def create_add_place_ship():
        order_id, version, _ = client.create_order(
            "py-cust", [("apple", 3, 50)], order_id="py-1", currency="EUR", command_id="py-c1")
        assert (order_id, version) == ("py-1", 1)
        again = client.create_order(
            "py-cust", [("apple", 3, 50)], order_id="py-1", currency="EUR", command_id="py-c1")
        assert again[1] == 1, "an idempotent repeat returns the original result"
        _, version, _ = client.add_item("py-1", "pear", 2, 120, expected_version=1)
        assert version == 2
        _, version, _ = client.place_order("py-1", expected_version=2)
        assert version == 3
        _, version, position = client.ship_order("py-1", "DHL", "PY0001")
        assert version == 4
        state["position"] = position

    def read_your_writes():
        order = client.get_order("py-1", min_position=state["position"])
        assert orders_client.status_name(pb, order.status) == "ORDER_STATUS_SHIPPED", order
        assert order.total_cents == 390 and order.item_count == 5, order
        assert [(line.sku, line.line_total_cents) for line in order.lines] == \
            [("apple", 150), ("pear", 240)], order
        assert order.carrier == "DHL" and order.last_position == state["position"]
        summaries = client.list_customer_orders("py-cust", min_position=state["position"])
        assert [s.order_id for s in summaries] == ["py-1"]
        analytics = client.analytics(min_position=state["position"])
        assert analytics.shipped_orders == 1 and analytics.placed_revenue_cents == 390

    def business_rules_and_validation():
        details = expect_code(grpc.StatusCode.FAILED_PRECONDITION,
                              client.add_item, "py-1", "fig", 1, 10)
        assert "Draft" in details, details
        details = expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                              client.add_item, "py-1", "fig", 0, 10)
        assert "quantity" in details, details
        expect_code(grpc.StatusCode.ABORTED, client.place_order, "py-1", expected_version=1)
        expect_code(grpc.StatusCode.NOT_FOUND, client.get_order, "nope")

    def tokens_are_required():
        anonymous = orders_client.OrdersClient(pb, client_addrs[0], client_addrs[1])
        try:
            expect_code(grpc.StatusCode.UNAUTHENTICATED, anonymous.create_order, "c", [("a", 1, 1)])
            expect_code(grpc.StatusCode.UNAUTHENTICATED, anonymous.get_order, "py-1")
        finally:
            anonymous.close()

    def event_stream():
        channel = grpc.insecure_channel(command_addr)
        stub = pb.command_service_grpc.CommandServiceStub(channel)
        stream = stub.SubscribeEvents(
            pb.command_service.SubscribeEventsRequest(after_position=0),
            metadata=(("authorization", f"Bearer {SUBSCRIBE_TOKEN}"),), timeout=20)
        kinds = []
        for message in stream:
            kind = message.WhichOneof("kind")
            if kind == "heartbeat":
                assert message.heartbeat.head_position == state["position"]
                break
            kinds.append(message.event.WhichOneof("event"))
        stream.cancel()
        channel.close()
        assert kinds == ["order_created", "item_added", "order_placed", "order_shipped"], kinds

    client_addrs = (client.command_addr, client.query_addr)
    check("create, add, place, ship (with an idempotent repeat)", create_add_place_ship)
    check("read-your-writes queries", read_your_writes)
    check("business rules and validation errors", business_rules_and_validation)
    check("tokens are required", tokens_are_required)
    check("the event stream", event_stream)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", default=str(orders_client.REPO / "target" / "debug"))
    args = parser.parse_args()
    bin_dir = Path(args.bin_dir)
    pb = orders_client.load_stubs()

    with tempfile.TemporaryDirectory() as data:
        command = Service(bin_dir / "command-service", [
            "--listen", "127.0.0.1:0", "--data-dir", f"{data}/command",
            "--auth-token", COMMAND_TOKEN, "--subscribe-token", SUBSCRIBE_TOKEN])
        query = None
        try:
            query = Service(bin_dir / "query-service", [
                "--listen", "127.0.0.1:0", "--data-dir", f"{data}/query",
                "--command-endpoint", f"http://{command.addr}"],
                env={"QUERY_SUBSCRIBE_TOKEN": SUBSCRIBE_TOKEN, "QUERY_AUTH_TOKEN": QUERY_TOKEN})
            client = orders_client.OrdersClient(
                pb, command.addr, query.addr, token=COMMAND_TOKEN, query_token=QUERY_TOKEN)
            client.command_addr, client.query_addr = command.addr, query.addr
            results = lifecycle(pb, client, command.addr)
            client.close()
        finally:
            codes = [s.stop() for s in (query, command) if s is not None]
    passed = sum(1 for _, e in results if e is None)
    failed = len(results) - passed
    if any(code != 0 for code in codes):
        print(f"FAIL a service did not exit cleanly on SIGTERM: {codes}")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

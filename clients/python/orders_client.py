"""A small Python client for the orders.v1 gRPC API.

The gRPC stubs are generated from the repository's proto/ with grpcio-tools at
run time into a temporary directory (nothing generated is committed), so the
client always matches the contract it is tested against.
"""

import importlib
import os
import sys
import tempfile
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"


def generate(out_dir, proto_dir=PROTO_DIR):
    """Runs grpcio-tools' protoc over every .proto under proto_dir into out_dir."""
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(proto_dir)) for p in Path(proto_dir).rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {protos}")


def load_stubs():
    """Generates the stubs into a temporary directory and imports them.

    Returns a namespace with the message modules and the service stubs.
    """
    out_dir = tempfile.mkdtemp(prefix="orders-pb-")
    generate(out_dir)
    sys.path.insert(0, out_dir)

    class Stubs:
        pass

    stubs = Stubs()
    for name in ("common", "events", "command_service", "query_service"):
        setattr(stubs, name, importlib.import_module(f"orders.v1.{name}_pb2"))
        setattr(stubs, f"{name}_grpc", importlib.import_module(f"orders.v1.{name}_pb2_grpc"))
    stubs.out_dir = out_dir
    return stubs


class OrdersClient:
    """Commands on command-service, queries on query-service.

    token / query_token: bearer tokens sent as `authorization` metadata when set;
    root_certificates: PEM bytes of a CA to connect with TLS instead of plaintext.
    """

    def __init__(self, pb, command_addr, query_addr, token=None, query_token=None,
                 root_certificates=None):
        self.pb = pb
        self._channels = []
        self.commands = pb.command_service_grpc.CommandServiceStub(
            self._channel(command_addr, root_certificates))
        self.queries = pb.query_service_grpc.QueryServiceStub(
            self._channel(query_addr, root_certificates))
        self._command_md = self._metadata(token)
        self._query_md = self._metadata(query_token)

    def _channel(self, addr, root_certificates):
        if root_certificates is None:
            channel = grpc.insecure_channel(addr)
        else:
            channel = grpc.secure_channel(
                addr, grpc.ssl_channel_credentials(root_certificates=root_certificates))
        self._channels.append(channel)
        return channel

    @staticmethod
    def _metadata(token):
        return (("authorization", f"Bearer {token}"),) if token else ()

    def close(self):
        for channel in self._channels:
            channel.close()

    # ---- commands: each returns (order_id, version, position) ----

    def _command(self, rpc, request, timeout=10):
        response = rpc(request, metadata=self._command_md, timeout=timeout)
        return response.order_id, response.version, response.position

    def create_order(self, customer_id, items, order_id="", currency="USD", command_id=""):
        pb = self.pb.command_service
        lines = [self.pb.common.LineItem(sku=s, quantity=q, unit_price_cents=p)
                 for s, q, p in items]
        return self._command(self.commands.CreateOrder, pb.CreateOrderRequest(
            order_id=order_id, customer_id=customer_id, items=lines, currency=currency,
            command_id=command_id))

    def add_item(self, order_id, sku, quantity, unit_price_cents, expected_version=None):
        pb = self.pb.command_service
        request = pb.AddItemRequest(order_id=order_id, item=self.pb.common.LineItem(
            sku=sku, quantity=quantity, unit_price_cents=unit_price_cents))
        if expected_version is not None:
            request.expected_version = expected_version
        return self._command(self.commands.AddItem, request)

    def place_order(self, order_id, expected_version=None):
        request = self.pb.command_service.PlaceOrderRequest(order_id=order_id)
        if expected_version is not None:
            request.expected_version = expected_version
        return self._command(self.commands.PlaceOrder, request)

    def ship_order(self, order_id, carrier, tracking_number):
        return self._command(self.commands.ShipOrder, self.pb.command_service.ShipOrderRequest(
            order_id=order_id, carrier=carrier, tracking_number=tracking_number))

    def cancel_order(self, order_id, reason):
        return self._command(self.commands.CancelOrder,
                             self.pb.command_service.CancelOrderRequest(
                                 order_id=order_id, reason=reason))

    # ---- queries ----

    def get_order(self, order_id, min_position=0, timeout=10):
        response = self.queries.GetOrder(
            self.pb.query_service.GetOrderRequest(order_id=order_id, min_position=min_position),
            metadata=self._query_md, timeout=timeout)
        return response.order

    def list_customer_orders(self, customer_id, min_position=0, page_size=20):
        response = self.queries.ListCustomerOrders(
            self.pb.query_service.ListCustomerOrdersRequest(
                customer_id=customer_id, min_position=min_position, page_size=page_size),
            metadata=self._query_md, timeout=10)
        return list(response.orders)

    def analytics(self, min_position=0, top_n=10):
        response = self.queries.GetOrderAnalytics(
            self.pb.query_service.GetOrderAnalyticsRequest(min_position=min_position, top_n=top_n),
            metadata=self._query_md, timeout=10)
        return response.analytics

    def projection_status(self):
        return self.queries.GetProjectionStatus(
            self.pb.query_service.GetProjectionStatusRequest(), metadata=self._query_md,
            timeout=10)


def status_name(pb, value):
    return pb.common.OrderStatus.Name(value)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="orders-pb-")
    os.makedirs(out, exist_ok=True)
    generate(out)
    print(f"generated Python stubs into {out}")

// Runs an order lifecycle from TypeScript (Node) against the real binaries,
// like clients/python/run_lifecycle.py.
//
// Starts command-service and query-service (from ../../target/debug unless
// --bin-dir says otherwise) on free ports with temporary data directories and
// bearer tokens switched on, then drives them over real gRPC (HTTP/2,
// @connectrpc/connect-node): create -> add -> remove -> place -> ship and
// create -> cancel with an idempotent repeat, read-your-writes queries
// (min_position), an ABORTED version conflict, INVALID_ARGUMENT naming its
// field (google.rpc.BadRequest), UNAUTHENTICATED without a token, and
// SubscribeEvents. Prints "N passed, N failed"; exits non-zero on any failure.
//
//   npm run lifecycle -- --bin-dir ../../target/debug

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import {
  Code,
  ConnectError,
  connectOrders,
  errorInfo,
  fieldViolations,
  type OrdersClient,
} from "./orders_client.js";
import { OrderStatus } from "./gen/orders/v1/common_pb.js";

const COMMAND_TOKEN = "ts-command-token";
const SUBSCRIBE_TOKEN = "ts-subscribe-token";
const QUERY_TOKEN = "ts-query-token";
/** The gRPC address a service logs first (not its metrics one). */
const LISTENING = /(?<!metrics )listening on ([^\s",]+)/;

class Service {
  readonly lines: string[] = [];
  private constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    readonly addr: string,
  ) {}

  /** Starts `binary` and waits (at most 60 s) until it logs its address. */
  static start(binary: string, args: string[], env: Record<string, string> = {}): Promise<Service> {
    const proc = spawn(binary, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, ...env },
    });
    const lines: string[] = [];
    return new Promise((resolveStart, rejectStart) => {
      const failed = (why: string) =>
        rejectStart(new Error(`${binary} did not start (${why}):\n${lines.join("\n")}`));
      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        failed("no address within 60 s");
      }, 60_000);
      proc.on("error", (e) => {
        clearTimeout(timer);
        failed(e.message);
      });
      proc.on("exit", (code) => {
        clearTimeout(timer);
        failed(`exit ${code}`);
      });
      let started: Service | undefined;
      createInterface({ input: proc.stderr! }).on("line", (line) => {
        if (started !== undefined) {
          started.lines.push(line);
          return;
        }
        lines.push(line);
        const match = LISTENING.exec(line);
        if (match) {
          clearTimeout(timer);
          proc.removeAllListeners("exit");
          started = new Service(binary, proc, match[1]);
          started.lines.push(...lines);
          resolveStart(started);
        }
      });
    });
  }

  get url(): string {
    return `http://${this.addr}`;
  }

  /** SIGTERM, then the exit code (SIGKILL after 20 s: reported as -1). */
  stop(): Promise<number> {
    if (this.proc.exitCode !== null) {
      return Promise.resolve(this.proc.exitCode);
    }
    return new Promise((resolveStop) => {
      const timer = setTimeout(() => {
        this.proc.kill("SIGKILL");
        resolveStop(-1);
      }, 20_000);
      this.proc.once("exit", (code) => {
        clearTimeout(timer);
        resolveStop(code ?? -1);
      });
      this.proc.kill("SIGTERM");
    });
  }
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new Error(message);
  }
}

function assertEqual<T>(actual: T, expected: T, what: string): void {
  const show = (v: unknown) => JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
  assert(show(actual) === show(expected), `${what}: expected ${show(expected)}, got ${show(actual)}`);
}

/** Runs `call`, which must fail with `code`; returns the error. */
async function expectCode(code: Code, call: () => Promise<unknown>): Promise<ConnectError> {
  let result: unknown;
  try {
    result = await call();
  } catch (e) {
    const error = ConnectError.from(e);
    assert(error.code === code, `expected ${Code[code]}, got ${Code[error.code]}: ${error.rawMessage}`);
    return error;
  }
  throw new Error(`expected ${Code[code]}, the call succeeded: ${String(result)}`);
}

const item = (sku: string, quantity: number, unitPriceCents: bigint) => ({ sku, quantity, unitPriceCents });

async function lifecycle(client: OrdersClient, urls: { command: string; query: string }) {
  const results: [string, Error | undefined][] = [];
  const check = async (name: string, fn: () => Promise<void>) => {
    try {
      await fn();
      results.push([name, undefined]);
      console.log(`ok   ${name}`);
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      results.push([name, error]);
      console.log(`FAIL ${name}: ${error.message}`);
      console.log(error.stack);
    }
  };
  const { command, query } = client;
  const state = { shipped: 0n, last: 0n };

  await check("create, add, remove, place, ship (with an idempotent repeat)", async () => {
    const create = {
      orderId: "ts-1",
      customerId: "ts-cust",
      items: [item("apple", 3, 50n)],
      currency: "EUR",
      commandId: "ts-c1",
    };
    const created = await command.createOrder(create);
    assertEqual([created.orderId, created.version], ["ts-1", 1n], "created");
    const again = await command.createOrder(create);
    assertEqual([again.version, again.position], [1n, created.position], "an idempotent repeat returns the original result");
    let ack: { version: bigint; position: bigint } = await command.addItem({
      orderId: "ts-1",
      item: item("pear", 2, 120n),
      expectedVersion: 1n,
    });
    assertEqual(ack.version, 2n, "after AddItem");
    ack = await command.addItem({ orderId: "ts-1", item: item("fig", 4, 10n) });
    assertEqual(ack.version, 3n, "after the second AddItem");
    ack = await command.removeItem({ orderId: "ts-1", sku: "fig", quantity: 0 });
    assertEqual(ack.version, 4n, "after RemoveItem (the whole line)");
    ack = await command.placeOrder({ orderId: "ts-1", expectedVersion: 4n });
    assertEqual(ack.version, 5n, "after PlaceOrder");
    ack = await command.shipOrder({ orderId: "ts-1", carrier: "DHL", trackingNumber: "TS0001" });
    assertEqual(ack.version, 6n, "after ShipOrder");
    state.shipped = ack.position;
    const cancelled = await command.createOrder({ orderId: "ts-2", customerId: "ts-other", items: [item("plum", 1, 75n)] });
    ack = await command.cancelOrder({ orderId: "ts-2", reason: "changed my mind", expectedVersion: cancelled.version });
    assertEqual(ack.version, 2n, "after CancelOrder");
    state.last = ack.position;
  });

  await check("read-your-writes queries (min_position)", async () => {
    const { order } = await query.getOrder({ orderId: "ts-1", minPosition: state.shipped });
    assert(order !== undefined, "an order view");
    assertEqual(OrderStatus[order.status], "SHIPPED", "status");
    assertEqual([order.totalCents, order.itemCount, order.currency], [390n, 5n, "EUR"], "total, items, currency");
    assertEqual(
      order.lines.map((l) => [l.sku, l.lineTotalCents]),
      [["apple", 150n], ["pear", 240n]],
      "lines",
    );
    assertEqual([order.carrier, order.lastPosition], ["DHL", state.shipped], "carrier, last position");
    const other = (await query.getOrder({ orderId: "ts-2", minPosition: state.last })).order;
    assertEqual([other && OrderStatus[other.status], other?.cancelReason], ["CANCELLED", "changed my mind"], "ts-2");
    const listed = await query.listCustomerOrders({ customerId: "ts-cust", minPosition: state.last });
    assertEqual(listed.orders.map((s) => s.orderId), ["ts-1"], "ts-cust's orders");
    const { analytics } = await query.getOrderAnalytics({ minPosition: state.last });
    assert(analytics !== undefined, "analytics");
    assertEqual(
      [analytics.shippedOrders, analytics.cancelledOrders, analytics.placedRevenueCents],
      [1n, 1n, 390n],
      "shipped, cancelled, placed revenue",
    );
  });

  await check("business rules and validation errors", async () => {
    let error = await expectCode(Code.FailedPrecondition, () =>
      command.addItem({ orderId: "ts-1", item: item("kiwi", 1, 10n) }),
    );
    assert(error.rawMessage.includes("Draft"), error.rawMessage);
    error = await expectCode(Code.InvalidArgument, () =>
      command.addItem({ orderId: "ts-1", item: item("kiwi", 0, 10n) }),
    );
    const fields = fieldViolations(error).map((v) => v.field);
    assert(fields.some((f) => f.includes("quantity")), `a BadRequest naming quantity: ${JSON.stringify(fields)}`);
    error = await expectCode(Code.Aborted, () => command.placeOrder({ orderId: "ts-1", expectedVersion: 1n }));
    const conflict = errorInfo(error)[0];
    assert(conflict !== undefined, "an ErrorInfo on the conflict");
    assertEqual(
      [conflict.metadata["expected_version"], conflict.metadata["current_version"]],
      ["1", "6"],
      "the conflict's versions",
    );
    await expectCode(Code.NotFound, () => query.getOrder({ orderId: "nope" }));
  });

  await check("tokens are required", async () => {
    const anonymous = connectOrders({ commandUrl: urls.command, queryUrl: urls.query });
    try {
      await expectCode(Code.Unauthenticated, () =>
        anonymous.command.createOrder({ customerId: "c", items: [item("a", 1, 1n)] }),
      );
      await expectCode(Code.Unauthenticated, () => anonymous.query.getOrder({ orderId: "ts-1" }));
    } finally {
      anonymous.close();
    }
  });

  await check("the event stream (SubscribeEvents)", async () => {
    const subscriber = connectOrders({ commandUrl: urls.command, queryUrl: urls.query, token: SUBSCRIBE_TOKEN });
    const abort = new AbortController();
    let logId: string | null = null;
    const kinds: string[] = [];
    try {
      const stream = subscriber.command.subscribeEvents(
        { afterPosition: 0n },
        { signal: abort.signal, timeoutMs: 20_000, onHeader: (h) => (logId = h.get("orders-log-id")) },
      );
      for await (const message of stream) {
        if (message.kind.case === "heartbeat") {
          assertEqual(message.kind.value.headPosition, state.last, "the heartbeat's head");
          assertEqual(message.kind.value.logId, logId, "the heartbeat's log id is the header's");
          break;
        }
        assert(message.kind.case === "event", "an event or a heartbeat");
        kinds.push(`${message.kind.value.orderId}:${message.kind.value.event.case}`);
      }
    } finally {
      abort.abort();
      subscriber.close();
    }
    assert(logId !== null && logId !== "", "an orders-log-id header");
    assertEqual(
      kinds,
      [
        "ts-1:orderCreated",
        "ts-1:itemAdded",
        "ts-1:itemAdded",
        "ts-1:itemRemoved",
        "ts-1:orderPlaced",
        "ts-1:orderShipped",
        "ts-2:orderCreated",
        "ts-2:orderCancelled",
      ],
      "the events in log order",
    );
  });
  return results;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { "bin-dir": { type: "string", default: resolve(import.meta.dirname, "../../../target/debug") } },
  });
  const binDir = resolve(values["bin-dir"]!);
  const data = mkdtempSync(join(tmpdir(), "orders-ts-"));
  const services: Service[] = [];
  let results: [string, Error | undefined][] = [];
  let codes: number[] = [];
  try {
    const command = await Service.start(join(binDir, "command-service"), [
      "--listen", "127.0.0.1:0", "--data-dir", join(data, "command"),
      "--auth-token", COMMAND_TOKEN, "--subscribe-token", SUBSCRIBE_TOKEN,
    ]);
    services.push(command);
    const query = await Service.start(
      join(binDir, "query-service"),
      ["--listen", "127.0.0.1:0", "--data-dir", join(data, "query"), "--command-endpoint", command.url],
      { QUERY_SUBSCRIBE_TOKEN: SUBSCRIBE_TOKEN, QUERY_AUTH_TOKEN: QUERY_TOKEN },
    );
    services.push(query);
    const client = connectOrders({
      commandUrl: command.url,
      queryUrl: query.url,
      token: COMMAND_TOKEN,
      queryToken: QUERY_TOKEN,
    });
    try {
      results = await lifecycle(client, { command: command.url, query: query.url });
    } finally {
      client.close();
    }
  } finally {
    codes = await Promise.all(services.reverse().map((s) => s.stop()));
    rmSync(data, { recursive: true, force: true });
  }
  const passed = results.filter(([, e]) => e === undefined).length;
  let failed = results.length - passed;
  if (codes.some((code) => code !== 0)) {
    console.log(`FAIL a service did not exit cleanly on SIGTERM: ${JSON.stringify(codes)}`);
    failed += 1;
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

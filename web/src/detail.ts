// One order's detail: its current view, kept live by a WatchOrder stream, and
// its event history from command-service's ListOrderEvents, extended each
// time the view's version moves past the events already shown.
import type { Clients } from "./api";
import type { EventEnvelope } from "./gen/orders/v1/events_pb";
import type { OrderView } from "./gen/orders/v1/query_service_pb";
import { byId, errorText, h, isAbort, money, showError, statusName, when } from "./dom";

const RETRY_MAX_MS = 5000;

export class OrderDetail {
  private abort: AbortController | null = null;
  /** The highest version whose event is in the history list. */
  private shownVersion = 0n;
  private currency = "";

  constructor(private readonly clients: Clients) {}

  /** Shows `orderId`, ending the stream of the order shown before. */
  open(orderId: string): void {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.shownVersion = 0n;
    byId("detail-id").textContent = orderId;
    byId("detail").dataset.orderId = orderId;
    byId("detail-events").replaceChildren();
    byId("detail-body").hidden = true;
    showError(byId("detail-error"), null);
    void this.follow(orderId, abort.signal);
  }

  /** Watches the order until another is opened; reconnects after an error. */
  private async follow(orderId: string, signal: AbortSignal): Promise<void> {
    let delay = 500;
    while (!signal.aborted) {
      try {
        for await (const { order } of this.clients.query.watchOrder({ orderId }, { signal })) {
          byId("detail-live").hidden = false;
          showError(byId("detail-error"), null);
          if (!order) continue;
          this.render(order);
          await this.history(orderId, order.version, signal);
          delay = 500;
        }
      } catch (e) {
        if (signal.aborted || isAbort(e)) return;
        showError(byId("detail-error"), errorText(e));
      }
      byId("detail-live").hidden = true;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  private render(o: OrderView): void {
    this.currency = o.currency;
    const facts: [string, string][] = [
      ["status", statusName(o.status)],
      ["customer", o.customerId],
      ["total", money(o.totalCents, o.currency)],
      ["items", String(o.itemCount)],
      ["version", String(o.version)],
      ["log position", String(o.lastPosition)],
      ["created", when(o.createdAt)],
      ["updated", when(o.updatedAt)],
      ["placed", when(o.placedAt)],
      ["shipped", when(o.shippedAt)],
      ["cancelled", when(o.cancelledAt)],
      ["carrier", o.carrier],
      ["tracking", o.trackingNumber],
      ["cancel reason", o.cancelReason],
    ];
    const detail = byId("detail");
    detail.dataset.status = statusName(o.status);
    detail.dataset.version = String(o.version);
    byId("detail-facts").replaceChildren(
      ...facts
        .filter(([, value]) => value !== "")
        .map(([name, value]) =>
          h("div", { "data-fact": name }, h("dt", {}, name), h("dd", {}, value)),
        ),
    );
    byId("detail-lines").replaceChildren(
      ...o.lines.map((l) =>
        h(
          "tr",
          { "data-sku": l.sku },
          h("td", {}, l.sku),
          h("td", { class: "num" }, String(l.quantity)),
          h("td", { class: "num" }, money(l.unitPriceCents, o.currency)),
          h("td", { class: "num" }, money(l.lineTotalCents, o.currency)),
        ),
      ),
    );
    byId("detail-body").hidden = false;
  }

  /** Appends the events after the ones shown, up to `version`. */
  private async history(orderId: string, version: bigint, signal: AbortSignal): Promise<void> {
    while (this.shownVersion < version && !signal.aborted) {
      const page = await this.clients.command.listOrderEvents(
        { orderId, afterVersion: this.shownVersion, pageSize: 100 },
        { signal },
      );
      if (page.events.length === 0) return;
      byId("detail-events").append(...page.events.map((e) => this.event(e)));
      this.shownVersion = page.events[page.events.length - 1].version;
    }
  }

  private event(e: EventEnvelope): HTMLElement {
    return h(
      "li",
      { "data-version": String(e.version), "data-type": e.event.case ?? "unknown" },
      h("span", { class: "pos" }, `#${e.position} v${e.version}`),
      h("span", { class: "what" }, this.describe(e)),
      h("time", {}, when(e.occurredAt)),
    );
  }

  private describe(e: EventEnvelope): string {
    const m = (cents: bigint) => money(cents, this.currency);
    const ev = e.event;
    switch (ev.case) {
      case "orderCreated":
        return `created for ${ev.value.customerId}, ${ev.value.items.length} line(s), total ${m(ev.value.totalCents)}`;
      case "itemAdded": {
        const item = ev.value.item;
        return `added ${item?.quantity ?? 0} × ${item?.sku ?? "?"} at ${m(item?.unitPriceCents ?? 0n)} (line now ${ev.value.lineQuantity}), total ${m(ev.value.totalCents)}`;
      }
      case "itemRemoved":
        return `removed ${ev.value.quantity} × ${ev.value.sku} (line now ${ev.value.lineQuantity}), total ${m(ev.value.totalCents)}`;
      case "orderPlaced":
        return `placed: ${ev.value.itemCount} item(s), total ${m(ev.value.totalCents)}`;
      case "orderShipped":
        return `shipped by ${ev.value.carrier}, tracking ${ev.value.trackingNumber}`;
      case "orderCancelled":
        return `cancelled: ${ev.value.reason || "(no reason)"}`;
      default:
        return "an event this page does not know";
    }
  }
}

// The recent-orders table: newest first, filtered by status, a page at a time
// (page tokens kept in a stack so "newer" goes back exactly).
import type { Clients } from "./api";
import { OrderStatus } from "./gen/orders/v1/common_pb";
import { byId, errorText, h, money, showError, statusName, when } from "./dom";

const PAGE_SIZE = 10;

export class OrdersTable {
  /** Tokens of the pages before the current one; the current is the last. */
  private tokens: string[] = [""];
  private next = "";
  private status = OrderStatus.UNSPECIFIED;
  /** Counts loads, so an answer overtaken by a later load (another filter or page) is dropped. */
  private loads = 0;

  constructor(
    private readonly clients: Clients,
    private readonly open: (orderId: string) => void,
  ) {
    const filter = byId<HTMLSelectElement>("orders-status");
    filter.addEventListener("change", () => {
      this.status = Number(filter.value) as OrderStatus;
      this.tokens = [""];
      void this.refresh();
    });
    byId("orders-prev").addEventListener("click", () => {
      if (this.tokens.length > 1) this.tokens.pop();
      void this.refresh();
    });
    byId("orders-next").addEventListener("click", () => {
      if (this.next) this.tokens.push(this.next);
      void this.refresh();
    });
  }

  /** Loads the current page again; `minPosition` waits for a command's effect. */
  async refresh(minPosition = 0n): Promise<void> {
    const error = byId("orders-error");
    const load = ++this.loads;
    try {
      const page = await this.clients.query.listRecentOrders({
        pageSize: PAGE_SIZE,
        pageToken: this.tokens[this.tokens.length - 1],
        status: this.status,
        minPosition,
      });
      if (load !== this.loads) return;
      this.next = page.nextPageToken;
      byId("orders-body").replaceChildren(
        ...page.orders.map((o) => {
          const row = h(
            "tr",
            { "data-order-id": o.orderId, tabindex: "0" },
            h("td", { class: "id" }, o.orderId),
            h("td", {}, o.customerId),
            h("td", {}, h("span", { class: `badge ${statusName(o.status)}` }, statusName(o.status))),
            h("td", { class: "num" }, String(o.itemCount)),
            h("td", { class: "num" }, money(o.totalCents)),
            h("td", {}, when(o.createdAt)),
          );
          row.addEventListener("click", () => this.open(o.orderId));
          row.addEventListener("keydown", (e) => {
            if (e.key === "Enter") this.open(o.orderId);
          });
          return row;
        }),
      );
      byId<HTMLButtonElement>("orders-prev").disabled = this.tokens.length <= 1;
      byId<HTMLButtonElement>("orders-next").disabled = !this.next;
      byId("orders-page").textContent = `page ${this.tokens.length}`;
      showError(error, null);
    } catch (e) {
      if (load === this.loads) showError(error, errorText(e));
    }
  }
}

// The analytics panel: headline figures and three charts (revenue per day,
// top products by quantity, orders by status).
import type { Clients } from "./api";
import { bars, columns } from "./charts";
import { byId, errorText, money, showError } from "./dom";

export async function refreshAnalytics(clients: Clients, minPosition = 0n): Promise<void> {
  const error = byId("analytics-error");
  try {
    const { analytics: a } = await clients.query.getOrderAnalytics({ topN: 8, minPosition });
    if (!a) return;
    byId("kpi-total").textContent = String(a.totalOrders);
    byId("kpi-revenue").textContent = money(a.placedRevenueCents);
    byId("kpi-aov").textContent = money(a.averageOrderValueCents);
    columns(
      byId("chart-daily"),
      a.daily.map((d) => ({
        label: d.date,
        value: Number(d.revenueCents),
        text: money(d.revenueCents),
        title: `${d.date}: ${money(d.revenueCents)} from ${d.ordersPlaced} order(s)`,
      })),
    );
    bars(
      byId("chart-products"),
      a.topProducts.map((p) => ({
        label: p.sku,
        value: Number(p.quantity),
        text: `${p.quantity} (${money(p.revenueCents)})`,
      })),
    );
    bars(byId("chart-status"), [
      { label: "draft", value: Number(a.draftOrders), kind: "draft" },
      { label: "placed", value: Number(a.placedOrders), kind: "placed" },
      { label: "shipped", value: Number(a.shippedOrders), kind: "shipped" },
      { label: "cancelled", value: Number(a.cancelledOrders), kind: "cancelled" },
    ]);
    showError(error, null);
  } catch (e) {
    showError(error, errorText(e));
  }
}

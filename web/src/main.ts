// The dashboard: reads /config.json, then keeps the status panel, the recent
// orders and the analytics current by polling GetProjectionStatus once a
// second and reloading the tables only when the applied position moved.
import { connect } from "./api";
import { refreshAnalytics } from "./analytics";
import { wireCommands } from "./commands";
import { OrderDetail } from "./detail";
import { byId, errorText, showError } from "./dom";
import { OrdersTable } from "./orders";
import { renderStatus, renderUnreachable } from "./status";

const POLL_MS = 1000;

async function start(): Promise<void> {
  const clients = await connect();
  const detail = new OrderDetail(clients);
  const orders = new OrdersTable(clients, (id) => detail.open(id));
  let shown = -1n;
  const reload = async (minPosition: bigint) => {
    await Promise.all([orders.refresh(minPosition), refreshAnalytics(clients, minPosition)]);
  };
  wireCommands(clients, (position) => void reload(position));

  const poll = async () => {
    try {
      const status = await clients.query.getProjectionStatus({});
      renderStatus(status);
      if (status.appliedPosition !== shown) {
        shown = status.appliedPosition;
        await reload(0n);
      }
    } catch (e) {
      renderUnreachable(errorText(e));
    }
    document.body.dataset.ready = "true";
    setTimeout(() => void poll(), POLL_MS);
  };
  await poll();
}

start().catch((e) => showError(byId("status-error"), `cannot start: ${errorText(e)}`));

// The command form: create, add an item, place, ship and cancel through
// command-service; the result (or the gRPC error text on refusal) is shown
// under the form, and the tables are refreshed up to the command's position.
import type { Clients } from "./api";
import type { LineItem } from "./gen/orders/v1/common_pb";
import { byId, errorText } from "./dom";

interface CommandResult {
  orderId: string;
  version: bigint;
  position: bigint;
}

const value = (id: string) => byId<HTMLInputElement>(id).value.trim();

function item(): Omit<LineItem, "$typeName"> {
  return {
    sku: value("f-sku"),
    quantity: Number(value("f-qty") || "0"),
    unitPriceCents: BigInt(value("f-price") || "0"),
  };
}

export function wireCommands(clients: Clients, done: (position: bigint) => void): void {
  const c = clients.command;
  const orderId = () => value("f-order");
  const commands: Record<string, () => Promise<CommandResult>> = {
    create: () =>
      c.createOrder({
        orderId: orderId(),
        customerId: value("f-customer"),
        currency: value("f-currency"),
        items: value("f-sku") ? [item()] : [],
      }),
    add: () => c.addItem({ orderId: orderId(), item: item() }),
    place: () => c.placeOrder({ orderId: orderId() }),
    ship: () =>
      c.shipOrder({
        orderId: orderId(),
        carrier: value("f-carrier"),
        trackingNumber: value("f-tracking"),
      }),
    cancel: () => c.cancelOrder({ orderId: orderId(), reason: value("f-reason") }),
  };
  const result = byId<HTMLOutputElement>("f-result");
  for (const button of document.querySelectorAll<HTMLButtonElement>("[data-command]")) {
    const name = button.dataset.command ?? "";
    button.addEventListener("click", async () => {
      const run = commands[name];
      if (!run) return;
      result.className = "pending";
      result.textContent = `${name}…`;
      try {
        const r = await run();
        byId<HTMLInputElement>("f-order").value = r.orderId;
        result.className = "ok";
        result.dataset.orderId = r.orderId;
        result.textContent = `${name}: order ${r.orderId} at version ${r.version}, log position ${r.position}`;
        done(r.position);
      } catch (e) {
        result.className = "error";
        result.textContent = `${name} refused: ${errorText(e)}`;
      }
    });
  }
}

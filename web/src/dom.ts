// Small DOM and formatting helpers shared by the panels.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { OrderStatus } from "./gen/orders/v1/common_pb";

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
}

/** Creates an element with attributes and children (strings become text). */
export function h(
  tag: string,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(
  tag: string,
  attrs: Record<string, string | number> = {},
  ...children: (Node | string)[]
): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/** `12.34` (or `€12.34` when the currency is known) from integer cents. */
export function money(cents: bigint, currency?: string): string {
  const value = Number(cents) / 100;
  if (currency) {
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency }).format(value);
    } catch {
      // An ISO code the browser does not know: plain number and the code.
    }
    return `${value.toFixed(2)} ${currency}`;
  }
  return value.toFixed(2);
}

/** `2026-12-02 14:03:09` (UTC), or an empty string when unset. */
export function when(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toISOString().slice(0, 19).replace("T", " ");
}

export function statusName(status: OrderStatus): string {
  return (OrderStatus[status] ?? "UNKNOWN").toLowerCase();
}

/** What a failed call tells a user: the gRPC code and the server's message. */
export function errorText(e: unknown): string {
  if (e instanceof ConnectError) return `${Code[e.code]}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

export function isAbort(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Canceled;
}

/** Shows `message` in an error paragraph, or hides it when null. */
export function showError(el: HTMLElement, message: string | null): void {
  el.hidden = message === null;
  el.textContent = message ?? "";
}

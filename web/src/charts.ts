// Bar charts drawn as plain SVG. Each chart keeps its data on the page: the
// container's `data-points` (JSON of [label, value] pairs) and each bar's
// `data-label`/`data-value`, so tests and tools read what is drawn.

import { svg } from "./dom";

export interface Point {
  label: string;
  value: number;
  /** The value as shown (e.g. money); defaults to the number. */
  text?: string;
  /** A CSS class for the bar (e.g. a status colour). */
  kind?: string;
  /** The tooltip; defaults to `label: text`. */
  title?: string;
}

const WIDTH = 360;
const ROW = 22;

/** Horizontal bars, one row per point, longest = the largest value. */
export function bars(container: HTMLElement, points: Point[]): void {
  container.dataset.points = JSON.stringify(points.map((p) => [p.label, p.value]));
  if (points.length === 0) {
    container.replaceChildren("no data yet");
    return;
  }
  const labelWidth = 110;
  const valueWidth = 80;
  const barSpace = WIDTH - labelWidth - valueWidth;
  const max = Math.max(1, ...points.map((p) => p.value));
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${points.length * ROW}`,
    width: WIDTH,
    height: points.length * ROW,
    role: "img",
  });
  points.forEach((p, i) => {
    const y = i * ROW;
    const width = Math.max(p.value > 0 ? 2 : 0, (p.value / max) * barSpace);
    const text = p.text ?? String(p.value);
    chart.append(
      svg("text", { x: labelWidth - 6, y: y + 15, "text-anchor": "end", class: "label" }, p.label),
      svg(
        "rect",
        {
          x: labelWidth,
          y: y + 4,
          width: width.toFixed(1),
          height: ROW - 8,
          rx: 2,
          class: `bar ${p.kind ?? ""}`.trim(),
          "data-label": p.label,
          "data-value": p.value,
        },
        svg("title", {}, p.title ?? `${p.label}: ${text}`),
      ),
      svg("text", { x: labelWidth + width + 6, y: y + 15, class: "value" }, text),
    );
  });
  container.replaceChildren(chart);
}

/** Vertical columns over time (oldest left), for per-day series. */
export function columns(container: HTMLElement, points: Point[]): void {
  container.dataset.points = JSON.stringify(points.map((p) => [p.label, p.value]));
  if (points.length === 0) {
    container.replaceChildren("no data yet");
    return;
  }
  const height = 150;
  const axis = 20;
  const max = Math.max(1, ...points.map((p) => p.value));
  const slot = WIDTH / Math.max(points.length, 7);
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height + axis}`,
    width: WIDTH,
    height: height + axis,
    role: "img",
  });
  chart.append(svg("line", { x1: 0, x2: WIDTH, y1: height, y2: height, class: "axis" }));
  points.forEach((p, i) => {
    const h = Math.max(p.value > 0 ? 2 : 0, (p.value / max) * (height - 16));
    const x = i * slot + slot * 0.15;
    const text = p.text ?? String(p.value);
    chart.append(
      svg(
        "rect",
        {
          x: x.toFixed(1),
          y: (height - h).toFixed(1),
          width: (slot * 0.7).toFixed(1),
          height: h.toFixed(1),
          rx: 2,
          class: "bar",
          "data-label": p.label,
          "data-value": p.value,
        },
        svg("title", {}, p.title ?? `${p.label}: ${text}`),
      ),
      svg("text", { x: x + slot * 0.35, y: height - h - 4, "text-anchor": "middle", class: "value" },
        text),
      svg("text", { x: x + slot * 0.35, y: height + 14, "text-anchor": "middle", class: "label" },
        p.label.slice(5)),
    );
  });
  container.replaceChildren(chart);
}

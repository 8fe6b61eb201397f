// Hand-drawn SVG line charts: one or more series over time with a threshold line, sized by
// the viewBox so CSS alone scales them. Colours come from classes in console.css.

import { h } from "./dom.js";

const WIDTH = 420;
const HEIGHT = 200;
const MARGIN = { left: 52, right: 12, top: 14, bottom: 30 };

function clock(millis) {
  return new Date(millis).toISOString().slice(11, 19);
}

/** The smallest of 1, 2, 2.5, 4, 5 or 10 times a power of ten at or above `value`, so that
 *  the quarter gridlines fall on round numbers. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 4, 5, 10].find((m) => m * power >= value) || 10;
  return step * power;
}

function tickLabel(value, unit) {
  const digits = Math.abs(value) >= 10 ? 0 : Math.abs(value) >= 1 ? 1 : 2;
  return `${value.toFixed(digits)}${unit}`;
}

/**
 * A line chart. `series`: [{name, className, points: [{at: millis, value}]}];
 * `threshold`: {value, label}; `unit`: "%" or " ms"; `ceiling`: the largest value the axis
 * may show (100 for percentages).
 */
export function lineChart({ id, title, unit, series, threshold, ceiling }) {
  const values = series.flatMap((s) => s.points.map((p) => p.value));
  const times = series.flatMap((s) => s.points.map((p) => p.at));
  if (threshold) {
    values.push(threshold.value);
  }
  let top = niceCeiling(Math.max(1e-9, ...values) * 1.1);
  if (ceiling !== undefined) {
    top = Math.min(top, ceiling);
  }
  const first = times.length ? Math.min(...times) : 0;
  const last = times.length ? Math.max(...times) : 1;
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (at) =>
    last > first ? MARGIN.left + ((at - first) / (last - first)) * plotWidth : MARGIN.left + plotWidth / 2;
  const y = (value) => MARGIN.top + plotHeight - (Math.min(value, top) / top) * plotHeight;

  const grid = [0, 0.25, 0.5, 0.75, 1].map((fraction) => {
    const value = top * fraction;
    return h(
      "svg:g",
      { class: "grid" },
      h("svg:line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }),
      h("svg:text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, tickLabel(value, "")),
    );
  });
  const axis = times.length
    ? [
        h("svg:text", { class: "axis-label", x: MARGIN.left, y: HEIGHT - 8, "text-anchor": "start" }, clock(first)),
        last > first
          ? h("svg:text", { class: "axis-label", x: WIDTH - MARGIN.right, y: HEIGHT - 8, "text-anchor": "end" }, clock(last))
          : null,
      ]
    : [h("svg:text", { class: "axis-label", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no analysis yet")];
  const lines = series.map((s) => {
    const sorted = [...s.points].sort((a, b) => a.at - b.at);
    return h(
      "svg:g",
      { class: `series ${s.className}` },
      sorted.length > 1
        ? h("svg:polyline", { points: sorted.map((p) => `${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") })
        : null,
      sorted.map((p) => h("svg:circle", { cx: x(p.at).toFixed(1), cy: y(p.value).toFixed(1), r: 3 })),
    );
  });
  const limit = threshold
    ? h(
        "svg:g",
        { class: "threshold" },
        h("svg:line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(threshold.value), y2: y(threshold.value) }),
        h("svg:text", { x: WIDTH - MARGIN.right - 2, y: y(threshold.value) - 4, "text-anchor": "end" }, threshold.label),
      )
    : null;

  const latest = series
    .map((s) => {
      const point = [...s.points].sort((a, b) => a.at - b.at).pop();
      return point ? `${s.name} ${tickLabel(point.value, unit)}` : `${s.name}: no data`;
    })
    .join(", ");
  const description = `${title}. Latest: ${latest}.${threshold ? ` ${threshold.label}.` : ""}`;
  return h(
    "figure",
    { class: "chart", id },
    h("figcaption", {}, title, h("span", { class: "unit" }, ` (${unit.trim()})`)),
    h(
      "svg:svg",
      { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": description },
      grid,
      axis,
      limit,
      lines,
    ),
    h(
      "ul",
      { class: "legend" },
      series.map((s) => h("li", { class: s.className }, h("span", { class: "swatch", "aria-hidden": "true" }), s.name)),
      threshold ? h("li", { class: "threshold" }, h("span", { class: "swatch", "aria-hidden": "true" }), threshold.label) : null,
    ),
  );
}

// Metrics: traffic, errors, latency and cache hit rate per region and per edge over a chosen
// window (SPEC §8.2), with a request-rate and p99 chart per region.

import { get, getAll } from "./api.js";
import { h, replace, table, heading, percent, millis, number, errorBlock } from "./dom.js";
import { regionsOf } from "./fleet.js";
import { lineChart } from "./charts.js";

const WINDOWS = [
  ["5m", "last 5 minutes", "10s"],
  ["15m", "last 15 minutes", "30s"],
  ["1h", "last hour", "1m"],
  ["6h", "last 6 hours", "5m"],
  ["24h", "last 24 hours", "20m"],
  ["7d", "last 7 days", "2h"],
];

const COLUMNS = ["", "Requests", "Requests/s", "Error rate", "Cache hit rate", "p50", "p99", "Bandwidth"];

function figures(label, stats) {
  return [
    label,
    number(stats.requestsTotal),
    number(stats.requestsPerSec, 1),
    percent(stats.errorRate),
    percent(stats.cacheHitRate),
    millis(stats.p50LatencyMs),
    millis(stats.p99LatencyMs),
    stats.bandwidthMbps == null ? "—" : `${number(stats.bandwidthMbps, 2)} Mbps`,
  ];
}

let chosenWindow = "1h";

export async function metricsPage(page) {
  const edges = await getAll("/edge-locations", "edgeLocations");
  const regions = regionsOf(edges).map(([region]) => region);
  const body = h("div", { id: "metrics-body", "aria-live": "polite" });
  const picker = h(
    "select",
    { id: "metrics-window", name: "window", onchange: () => draw().catch(() => {}) },
    WINDOWS.map(([value, text]) => h("option", { value, selected: value === chosenWindow }, text)),
  );
  replace(
    page.root,
    heading(
      "Metrics",
      h("form", { class: "inline-form", onsubmit: (event) => event.preventDefault() }, h("label", { for: "metrics-window" }, "Window"), picker),
    ),
    body,
  );

  async function draw() {
    chosenWindow = picker.value;
    const step = WINDOWS.find(([value]) => value === chosenWindow)[2];
    const answers = await Promise.all(
      regions.map((region) =>
        get(`/metrics/regions/${encodeURIComponent(region)}?window=${chosenWindow}&step=${step}`).catch((error) => ({ error })),
      ),
    );
    if (page.closed) {
      return;
    }
    const sections = regions.map((region, index) => {
      const answer = answers[index];
      if (answer.error) {
        return h("section", { class: "card" }, h("h2", {}, region), errorBlock(answer.error));
      }
      const rows = [
        { attributes: { class: "total" }, cells: figures(`All of ${region}`, answer) },
        ...(answer.locations || [])
          .sort((a, b) => a.locationId.localeCompare(b.locationId))
          .map((location) => ({
            attributes: { "data-location": location.locationId },
            cells: figures(location.locationId, location),
          })),
      ];
      const points = (answer.series || []).map((point) => ({
        at: new Date(point.timestamp || point.at || point.from).getTime(),
        ...point,
      }));
      const chart = (key, title, unit) =>
        lineChart({
          id: `metrics-${index}-${key}`,
          title: `${title}, ${region}`,
          unit,
          series: [{ name: region, className: "canary", points: points.filter((p) => p[key] != null && !Number.isNaN(p.at)).map((p) => ({ at: p.at, value: p[key] })) }],
        });
      return h(
        "section",
        { class: "card", "data-region": region, "aria-label": region },
        h("h2", {}, region),
        table(null, COLUMNS, rows, { class: "metrics" }),
        points.length
          ? h("div", { class: "charts" }, chart("requestsPerSec", "Requests per second", "req/s"), chart("p99LatencyMs", "p99 latency", " ms"), chart("errorRate", "Error rate", "%"))
          : null,
      );
    });
    replace(body, regions.length ? sections : h("p", {}, "No edge locations are registered yet."));
  }

  await draw();
  page.every(15000, () => draw().catch(() => {}));
}

// Deployments: the list, the form that starts one, and one deployment live — its waves with
// progress bars, per-edge states, the event timeline read from the SSE stream, canary versus
// baseline charts with the thresholds drawn, the verdicts, and the actions the role allows.

import { get, getAll, post, can, followEvents, ApiError } from "./api.js";
import {
  h, replace, table, badge, formatTime, heading, errorBlock, notify, progressBar, shortId,
  percent, millis, number,
} from "./dom.js";
import { lineChart } from "./charts.js";
import { configurationNames, regionsOf } from "./fleet.js";

const TERMINAL = ["Completed", "Failed", "RolledBack"];

function overall(deployment) {
  const progress = deployment.progress || { acked: 0, targets: 0 };
  return progressBar(
    `Edges on ${deployment.configurationVersion}`,
    progress.acked,
    progress.targets,
    `progress-${deployment.deploymentId}`,
  );
}

export async function deploymentsPage(page) {
  const names = await configurationNames();
  const body = h("div", {});
  replace(
    page.root,
    heading(
      "Deployments",
      can("Operator") ? h("a", { class: "button", href: "#/deployments/new", id: "new-deployment" }, "Start a deployment") : null,
    ),
    body,
  );
  async function draw() {
    const answer = await get("/deployments?limit=50");
    if (page.closed) {
      return;
    }
    const rows = answer.deployments.map((d) => ({
      attributes: { "data-deployment": d.deploymentId },
      cells: [
        h("a", { href: `#/deployments/${encodeURIComponent(d.deploymentId)}` }, shortId(d.deploymentId)),
        names.get(d.configurationId) || d.configurationId,
        d.configurationVersion,
        d.strategy,
        badge(d.status),
        overall(d),
        formatTime(d.startedAt || d.createdAt),
      ],
    }));
    replace(
      body,
      rows.length
        ? table(
            `${answer.total} deployment(s), newest first`,
            ["Deployment", "Configuration", "Version", "Strategy", "Status", "Progress", "Started"],
            rows,
          )
        : h("p", {}, "No deployments yet."),
    );
  }
  await draw();
  page.every(5000, () => draw().catch(() => {}));
}

// ---------------------------------------------------------------------------------------------
// Starting a deployment

const STRATEGIES = [
  ["RegionalCanary", "Regional canary"],
  ["DirectDeployment", "Direct (all at once)"],
  ["BlueGreenDeployment", "Blue-green"],
  ["RollingRegional", "Rolling, region by region"],
  ["GeographicWave", "Geographic wave"],
];

function field(id, label, attributes) {
  return h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name: id, ...attributes }));
}

function checkbox(id, label, checked) {
  return h("div", { class: "check" }, h("input", { id, name: id, type: "checkbox", checked }), h("label", { for: id }, label));
}

export async function newDeploymentPage(page, preselected) {
  if (!can("Operator")) {
    replace(page.root, heading("Start a deployment"), h("p", {}, "Starting a deployment needs the Operator role."));
    return;
  }
  const [configurations, edges, thresholds] = await Promise.all([
    getAll("/configurations", "configurations"),
    getAll("/edge-locations", "edgeLocations"),
    get("/metrics/thresholds"),
  ]);
  configurations.sort((a, b) => a.name.localeCompare(b.name));
  const regions = regionsOf(edges).map(([region]) => region);
  const result = h("div", { id: "deploy-result", "aria-live": "polite" });
  const versionSelect = h("select", { id: "deploy-version", name: "version", required: true });

  async function loadVersions() {
    const id = document.getElementById("deploy-config").value;
    if (!id) {
      replace(versionSelect);
      return;
    }
    const versions = await getAll(`/configurations/${encodeURIComponent(id)}/versions`, "versions");
    if (document.getElementById("deploy-config").value !== id) {
      return; // another configuration was chosen meanwhile; its own answer fills the list
    }
    const approved = versions.filter((v) => v.status === "Approved");
    replace(
      versionSelect,
      approved.length
        ? approved.map((v) => h("option", { value: v.version }, `${v.version} (approved by ${v.approvedBy || "?"})`))
        : h("option", { value: "" }, "no approved version"),
    );
  }

  function showStrategyFields() {
    const strategy = document.getElementById("deploy-strategy").value;
    for (const group of document.querySelectorAll("[data-strategies]")) {
      group.hidden = !group.dataset.strategies.split(" ").includes(strategy);
    }
  }

  function request() {
    const value = (id) => document.getElementById(id).value.trim();
    const checked = (id) => document.getElementById(id).checked;
    const strategy = value("deploy-strategy");
    const body = {
      configurationId: value("deploy-config"),
      configurationVersion: value("deploy-version") || undefined,
      strategy,
      targetRegions: regions.filter((_, index) => checked(`region-${index}`)),
      failureAction: value("deploy-failure-action"),
      acknowledgeWarnings: checked("deploy-acknowledge"),
      rollbackConfig: {
        autoRollback: checked("deploy-auto-rollback"),
        errorRateThreshold: Number(value("deploy-error-threshold")),
        p99LatencyThresholdMs: Number(value("deploy-p99-threshold")),
        cacheHitRateThreshold: Number(value("deploy-hit-threshold")),
        minSamples: Number(value("deploy-min-samples")),
        maxRegression: thresholds.maxRegression,
        breachIntervals: thresholds.breachIntervals,
        maxExtension: thresholds.maxExtension,
      },
    };
    if (strategy === "RegionalCanary") {
      body.canaryConfig = {
        promotionSteps: value("deploy-steps").split(/[\s,]+/).filter(Boolean).map(Number),
        monitorDuration: value("deploy-monitor"),
        autoPromote: checked("deploy-auto-promote"),
      };
    } else if (strategy === "BlueGreenDeployment") {
      body.testDuration = value("deploy-test-duration");
    } else if (strategy === "RollingRegional") {
      body.regionDelay = value("deploy-region-delay");
      body.requireApproval = checked("deploy-require-approval");
    } else if (strategy === "GeographicWave") {
      body.deploymentTime = value("deploy-time");
      body.monitorDuration = value("deploy-wave-monitor");
    }
    return body;
  }

  async function preview() {
    try {
      const answer = await post("/deployments?dryRun=true", request());
      const waves = (answer.plan && answer.plan.waves) || [];
      replace(
        result,
        h("h2", {}, "Plan (nothing is pushed)"),
        table(
          null,
          ["Wave", "Edges", "Watch"],
          waves.map((wave) => [wave.name, (wave.locations || []).join(", "), `${Math.round((wave.watchMs || 0) / 1000)} s`]),
        ),
      );
    } catch (error) {
      replace(result, errorBlock(error));
    }
  }

  async function start(event) {
    event.preventDefault();
    const button = document.getElementById("deploy-submit");
    button.disabled = true;
    try {
      const answer = await post("/deployments", request());
      notify(`Deployment ${shortId(answer.deploymentId)} started.`);
      location.hash = `#/deployments/${encodeURIComponent(answer.deploymentId)}`;
    } catch (error) {
      replace(result, errorBlock(error));
    } finally {
      button.disabled = false;
    }
  }

  const form = h(
    "form",
    { id: "deploy-form", class: "stacked", onsubmit: start },
    h(
      "fieldset",
      {},
      h("legend", {}, "What"),
      h(
        "div",
        { class: "field" },
        h("label", { for: "deploy-config" }, "Configuration"),
        h(
          "select",
          { id: "deploy-config", name: "configuration", required: true, onchange: () => loadVersions().catch(() => {}) },
          configurations.map((c) =>
            h("option", { value: c.configurationId, selected: c.configurationId === preselected }, `${c.name} (${c.type})`),
          ),
        ),
      ),
      h("div", { class: "field" }, h("label", { for: "deploy-version" }, "Version"), versionSelect),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Where"),
      regions.map((region, index) => checkbox(`region-${index}`, region, true)),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "How"),
      h(
        "div",
        { class: "field" },
        h("label", { for: "deploy-strategy" }, "Strategy"),
        h("select", { id: "deploy-strategy", name: "strategy", onchange: showStrategyFields }, STRATEGIES.map(([value, text]) => h("option", { value }, text))),
      ),
      h(
        "div",
        { "data-strategies": "RegionalCanary", class: "group" },
        field("deploy-steps", "Promotion steps (% of targets)", { value: "10, 50, 100" }),
        field("deploy-monitor", "Watch each step for", { value: "5m" }),
        checkbox("deploy-auto-promote", "Promote automatically when a step passes", true),
      ),
      h("div", { "data-strategies": "BlueGreenDeployment", class: "group" }, field("deploy-test-duration", "Watch after switching for", { value: "10m" })),
      h(
        "div",
        { "data-strategies": "RollingRegional", class: "group" },
        field("deploy-region-delay", "Watch each region for", { value: "15m" }),
        checkbox("deploy-require-approval", "Wait for approval before the next region", false),
      ),
      h(
        "div",
        { "data-strategies": "GeographicWave", class: "group" },
        field("deploy-time", "Local start time in each region", { value: "02:00" }),
        field("deploy-wave-monitor", "Watch each region for", { value: "1h" }),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: "deploy-failure-action" }, "When a watch fails"),
        h(
          "select",
          { id: "deploy-failure-action", name: "failureAction" },
          h("option", { value: "rollback" }, "roll back"),
          h("option", { value: "pause" }, "pause and wait for a person"),
        ),
      ),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Automatic rollback"),
      checkbox("deploy-auto-rollback", "Roll back by itself on a breach", thresholds.autoRollback),
      field("deploy-error-threshold", "Error rate above (%)", { type: "number", step: "any", min: 0, max: 100, value: thresholds.errorRateThreshold }),
      field("deploy-p99-threshold", "p99 latency above (ms)", { type: "number", step: "any", min: 0, value: thresholds.p99LatencyThresholdMs }),
      field("deploy-hit-threshold", "Cache hit rate below (%)", { type: "number", step: "any", min: 0, max: 100, value: thresholds.cacheHitRateThreshold }),
      field("deploy-min-samples", "Fewest requests for a verdict", { type: "number", min: 0, step: 1, value: thresholds.minSamples }),
    ),
    checkbox("deploy-acknowledge", "Deploy even if validation has warnings", false),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", class: "secondary", id: "deploy-preview", onclick: preview }, "Preview plan"),
      h("button", { type: "submit", id: "deploy-submit" }, "Start deployment"),
    ),
  );
  replace(page.root, heading("Start a deployment"), h("p", {}, h("a", { href: "#/deployments" }, "← All deployments")), form, result);
  showStrategyFields();
  await loadVersions();
}

// ---------------------------------------------------------------------------------------------
// One deployment

function waveLabel(deployment, index, locations, regionOf) {
  const steps = (deployment.canaryConfig && deployment.canaryConfig.promotionSteps) || [];
  const regions = [...new Set(locations.map((l) => regionOf.get(l)).filter(Boolean))].join(", ");
  switch (deployment.strategy) {
    case "RegionalCanary":
      return `Step ${index + 1}: up to ${steps[index] ?? "?"}% of targets`;
    case "DirectDeployment":
      return "All targets";
    case "RollingRegional":
    case "GeographicWave":
      return regions || `Wave ${index + 1}`;
    default:
      return `Wave ${index + 1}${regions ? ` (${regions})` : ""}`;
  }
}

function wavesCard(deployment, edges, regionOf) {
  const waves = new Map();
  for (const edge of edges) {
    if (edge.state === "Skipped") {
      continue;
    }
    if (!waves.has(edge.wave)) {
      waves.set(edge.wave, []);
    }
    waves.get(edge.wave).push(edge);
  }
  const progress = deployment.progress || { acked: 0, targets: 0, nacks: [] };
  return h(
    "section",
    { class: "card", id: "progress" },
    h("h2", {}, "Progress"),
    h("p", { class: "big", id: "progress-percentage" }, `${deployment.progressPercentage}% complete`),
    overall(deployment),
    [...waves.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, inWave]) =>
        progressBar(
          waveLabel(deployment, index, inWave.map((e) => e.locationId), regionOf),
          inWave.filter((e) => e.state === "Acked" && e.touched).length,
          inWave.length,
          `wave-${index}`,
        ),
      ),
    h(
      "p",
      { class: "muted" },
      `Apply latency p50 ${progress.p50ApplyMs ?? "—"} ms, p99 ${progress.p99ApplyMs ?? "—"} ms.`,
    ),
    (progress.nacks || []).length
      ? h("ul", { class: "errors" }, progress.nacks.map((n) => h("li", {}, `${n.locationId} refused: ${n.reason}`)))
      : null,
  );
}

function edgesCard(edges, regionOf) {
  return h(
    "section",
    { class: "card", id: "edges" },
    h("h2", {}, "Edges"),
    table(
      null,
      ["Location", "Region", "Wave", "State", "Before", "Pushed", "Acked", "Apply", "Note"],
      edges
        .slice()
        .sort((a, b) => (a.wave ?? 99) - (b.wave ?? 99) || a.locationId.localeCompare(b.locationId))
        .map((e) => ({
          attributes: { "data-location": e.locationId, "data-state": e.state },
          cells: [
            e.locationId,
            regionOf.get(e.locationId) || "—",
            e.wave === undefined ? "—" : String(e.wave + 1),
            badge(e.state),
            e.previousVersion || "—",
            formatTime(e.pushedAt),
            formatTime(e.ackedAt),
            e.applyLatencyMs == null ? "—" : `${e.applyLatencyMs} ms`,
            e.error || "",
          ],
        })),
    ),
  );
}

const METRICS = {
  ErrorRate: { title: "Error rate", unit: "%", key: "errorRate", limit: "errorRateThreshold", word: "above", format: percent },
  P99Latency: { title: "p99 latency", unit: " ms", key: "p99LatencyMs", limit: "p99LatencyThresholdMs", word: "above", format: millis },
  CacheHitRate: { title: "Cache hit rate", unit: "%", key: "cacheHitRate", limit: "cacheHitRateThreshold", word: "below", format: percent },
};

function verdictCard(deployment, analysis) {
  const verdicts = analysis.verdicts || [];
  const last = verdicts.length ? verdicts[verdicts.length - 1] : null;
  const failing = [...verdicts].reverse().find((v) => v.verdict.outcome === "Fail");
  const shown = failing || last;
  const rollback = (deployment.events || []).filter((e) => e.kind === "RollbackStarted").pop();
  const content = shown
    ? [
        h(
          "p",
          {},
          badge(shown.verdict.outcome),
          ` ${failing ? "Failing verdict" : "Latest verdict"} at ${formatTime(shown.at)} — canary ${shown.verdict.canary.edgeCount} edge(s), ${
            shown.verdict.baseline ? `baseline ${shown.verdict.baseline.edgeCount} edge(s)` : shown.verdict.note || "no baseline"
          }.`,
        ),
        shown.verdict.reasons.length
          ? table(
              null,
              ["Metric", "Check", "Canary", "Baseline", "Threshold", "Severe", "Intervals"],
              shown.verdict.reasons.map((r) => {
                const metric = METRICS[r.metric] || { format: (v) => number(v, 2), title: r.metric };
                return {
                  attributes: { "data-metric": r.metric },
                  cells: [
                    r.metric,
                    r.kind,
                    metric.format(r.canaryValue),
                    r.baselineValue == null ? "—" : metric.format(r.baselineValue),
                    metric.format(r.threshold),
                    r.severe ? "yes" : "no",
                    String(r.consecutiveIntervals),
                  ],
                };
              }),
              { class: "reasons" },
            )
          : h("p", {}, "No metric breached its limits."),
      ]
    : [h("p", {}, "No analysis verdict yet.")];
  return h(
    "section",
    { class: "card", id: "verdict" },
    h("h2", {}, `Analysis (${verdicts.length} verdict${verdicts.length === 1 ? "" : "s"})`),
    rollback ? h("p", { class: "error", id: "rollback-reason" }, `Rolled back: ${rollback.message}`) : null,
    ...content,
  );
}

function chartsCard(analysis) {
  const config = analysis.rollbackConfig || {};
  const verdicts = analysis.verdicts || [];
  const charts = Object.entries(METRICS).map(([name, metric]) => {
    const series = ["canary", "baseline"].map((group) => ({
      name: group === "canary" ? "Canary" : "Baseline",
      className: group,
      points: verdicts
        .filter((v) => v.verdict[group] && v.verdict[group].requestsTotal > 0)
        .map((v) => ({ at: new Date(v.at).getTime(), value: v.verdict[group][metric.key] })),
    }));
    return lineChart({
      id: `chart-${name}`,
      title: metric.title,
      unit: metric.unit,
      series,
      ceiling: metric.unit === "%" ? 100 : undefined,
      threshold:
        config[metric.limit] === undefined
          ? null
          : { value: config[metric.limit], label: `limit: ${metric.word} ${metric.format(config[metric.limit])}` },
    });
  });
  const canary = (analysis.canary && analysis.canary.metrics) || {};
  const baseline = (analysis.baseline && analysis.baseline.metrics) || {};
  const row = (label, key, format) => [label, format(canary[key]), format(baseline[key])];
  return h(
    "section",
    { class: "card", id: "charts" },
    h("h2", {}, "Canary against baseline"),
    h("div", { class: "charts" }, charts),
    table(
      "Over the whole deployment",
      ["", `Canary (${(analysis.canary && analysis.canary.locations.length) || 0} edges)`, `Baseline (${(analysis.baseline && analysis.baseline.locations.length) || 0} edges)`],
      [
        row("Requests", "requestsTotal", (v) => number(v)),
        row("Error rate", "errorRate", percent),
        row("p99 latency", "p99LatencyMs", millis),
        row("Cache hit rate", "cacheHitRate", percent),
      ],
      { class: "compact" },
    ),
  );
}

function actionsCard(deployment, act) {
  if (TERMINAL.includes(deployment.status)) {
    return null;
  }
  if (!can("Operator")) {
    return h(
      "section",
      { class: "card", id: "actions" },
      h("h2", {}, "Actions"),
      h("p", { class: "muted" }, "Your role can watch this deployment; acting on it needs the Operator role."),
    );
  }
  const status = deployment.status;
  const buttons = [];
  if (["InProgress", "Canary", "AwaitingApproval", "Pending"].includes(status)) {
    buttons.push(h("button", { type: "button", class: "secondary", id: "action-pause", onclick: () => act("pause") }, "Pause"));
  }
  if (status === "Paused") {
    buttons.push(h("button", { type: "button", id: "action-resume", onclick: () => act("resume") }, "Resume"));
  }
  if (["Canary", "AwaitingApproval", "InProgress"].includes(status) && deployment.strategy !== "RollingRegional") {
    buttons.push(h("button", { type: "button", id: "action-promote", onclick: () => act("promote") }, "Promote now"));
  }
  if (status === "AwaitingApproval" && deployment.strategy === "RollingRegional") {
    buttons.push(h("button", { type: "button", id: "action-approve-next-region", onclick: () => act("approve-next-region") }, "Approve next region"));
  }
  return h(
    "section",
    { class: "card", id: "actions" },
    h("h2", {}, "Actions"),
    h("div", { class: "buttons" }, buttons),
    h(
      "form",
      {
        class: "inline-form",
        onsubmit: (event) => {
          event.preventDefault();
          act("rollback", { reason: document.getElementById("rollback-reason-input").value });
        },
      },
      h("label", { for: "rollback-reason-input" }, "Rollback reason"),
      h("input", { id: "rollback-reason-input", name: "reason", maxlength: 4096, placeholder: "why (optional)" }),
      h("button", { type: "submit", class: "danger", id: "action-rollback" }, "Roll back"),
    ),
    h("div", { id: "action-result", "aria-live": "polite" }),
  );
}

function timelineEntry(event) {
  return h(
    "li",
    { "data-kind": event.kind },
    h("time", { datetime: event.at }, formatTime(event.at).slice(11)),
    " ",
    badge(event.kind, "neutral"),
    " ",
    h("span", { class: "actor" }, event.actor),
    " ",
    event.locationId ? h("strong", {}, `${event.locationId} `) : null,
    event.message,
  );
}

export async function deploymentPage(page, deploymentId) {
  const path = `/deployments/${encodeURIComponent(deploymentId)}`;
  const [names, fleet] = await Promise.all([configurationNames(), getAll("/edge-locations", "edgeLocations")]);
  const regionOf = new Map(fleet.map((e) => [e.locationId, e.region]));

  const head = h("div", {});
  const actions = h("div", {});
  const progressSlot = h("div", {});
  const verdictSlot = h("div", {});
  const chartsSlot = h("div", {});
  const edgesSlot = h("div", {});
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const streamState = h("p", { class: "muted", id: "stream-state" }, "Connecting to the live event stream…");
  replace(
    page.root,
    head,
    h("p", {}, h("a", { href: "#/deployments" }, "← All deployments")),
    actions,
    h("div", { class: "columns" }, progressSlot, chartsSlot),
    verdictSlot,
    edgesSlot,
    h("section", { class: "card" }, h("h2", {}, "Timeline"), streamState, timeline),
  );

  let latest = null;
  async function act(action, body) {
    const slot = document.getElementById("action-result");
    try {
      await post(`${path}/${action}`, body || {});
      notify(`${action.replace(/-/g, " ")} sent.`);
      await refresh();
    } catch (error) {
      if (slot) {
        replace(slot, errorBlock(error));
      }
    }
  }

  async function refresh() {
    const [deployment, edges, analysis] = await Promise.all([
      get(path, { signal: page.signal }),
      get(`${path}/edge-locations`, { signal: page.signal }),
      get(`/metrics${path}`, { signal: page.signal }),
    ]);
    if (page.closed) {
      return;
    }
    latest = deployment;
    replace(
      head,
      heading(
        `Deployment ${shortId(deployment.deploymentId)}`,
        h("p", { class: "subtitle" },
          badge(deployment.status),
          ` ${names.get(deployment.configurationId) || deployment.configurationId} @ ${deployment.configurationVersion} · ${deployment.strategy} · by ${deployment.deployedBy} · started ${formatTime(deployment.startedAt)}`,
          deployment.durationSeconds != null ? ` · took ${deployment.durationSeconds} s` : "",
        ),
      ),
    );
    head.querySelector("h1").id = "deployment-title";
    head.querySelector(".badge").id = "deployment-status";
    replace(actions, actionsCard(deployment, act));
    replace(progressSlot, wavesCard(deployment, edges.edgeLocations, regionOf));
    replace(verdictSlot, verdictCard(deployment, analysis));
    replace(chartsSlot, chartsCard(analysis));
    replace(edgesSlot, edgesCard(edges.edgeLocations, regionOf));
  }

  // Events come in bursts (a wave of acks): redraw at most every 1.5 s, and once after.
  let pending = null;
  let lastDrawn = 0;
  function refreshSoon() {
    if (pending || page.closed) {
      return;
    }
    const wait = Math.max(0, lastDrawn + 1500 - Date.now());
    pending = setTimeout(() => {
      pending = null;
      lastDrawn = Date.now();
      refresh().catch((error) => {
        if (!(error instanceof ApiError) || error.status !== 401) {
          notify(`Could not refresh: ${error.message}`);
        }
      });
    }, wait);
  }

  await refresh();
  lastDrawn = Date.now();

  async function follow() {
    replace(timeline);
    let lagged = false;
    try {
      streamState.textContent = "Live: following the deployment's events.";
      await followEvents(
        deploymentId,
        (name, data) => {
          if (name === "lagged") {
            lagged = true;
          } else if (data && data.kind) {
            timeline.appendChild(timelineEntry(data));
            refreshSoon();
          }
        },
        page.signal,
      );
      if (lagged && !page.closed) {
        // The server dropped a slow reader; the stream starts again with the whole history.
        follow();
        return;
      }
      if (!page.closed) {
        streamState.textContent = "The deployment has ended; this is its whole timeline.";
        refreshSoon();
      }
    } catch (error) {
      if (page.closed || (error instanceof ApiError && error.status === 401)) {
        return;
      }
      streamState.textContent = `The live stream stopped (${error.message}); reconnecting…`;
      setTimeout(() => {
        if (!page.closed) {
          follow();
        }
      }, 3000);
    }
  }
  follow();
  // Watches can be long and quiet: the charts and heartbeats still move.
  page.every(10000, () => {
    if (latest && !TERMINAL.includes(latest.status)) {
      refreshSoon();
    }
  });
}

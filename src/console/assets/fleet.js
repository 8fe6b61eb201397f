// Fleet: every edge location by region — health, the versions it reports running, its last
// heartbeat and whether it is quarantined (SPEC §2.3, §7).

import { getAll, call, can } from "./api.js";
import { h, replace, table, badge, ago, heading, errorBlock, notify } from "./dom.js";

/** configurationId → name, so active versions read as names. */
export async function configurationNames() {
  const names = new Map();
  for (const configuration of await getAll("/configurations", "configurations")) {
    names.set(configuration.configurationId, configuration.name);
  }
  return names;
}

function regionsOf(edges) {
  const regions = new Map();
  for (const edge of edges) {
    const region = edge.region || "(no region)";
    if (!regions.has(region)) {
      regions.set(region, []);
    }
    regions.get(region).push(edge);
  }
  return [...regions.entries()].sort(([a], [b]) => a.localeCompare(b));
}

export async function fleetPage(page) {
  let names = await configurationNames();
  const body = h("div", { id: "fleet-body" });
  replace(
    page.root,
    heading("Fleet", h("p", { class: "subtitle" }, "Edge locations by region; refreshed every 10 seconds.")),
    body,
  );

  async function clearQuarantine(edge) {
    try {
      await call("DELETE", `/edge-locations/${encodeURIComponent(edge.locationId)}/quarantine`);
      notify(`${edge.locationId} is back in deployments.`);
      await draw();
    } catch (error) {
      replace(body, errorBlock(error));
    }
  }

  async function draw() {
    const edges = await getAll("/edge-locations", "edgeLocations");
    if (page.closed) {
      return;
    }
    if (edges.some((edge) => Object.keys(edge.activeConfigurations || {}).some((id) => !names.has(id)))) {
      names = await configurationNames();
    }
    const healthy = edges.filter((edge) => edge.health && edge.health.isHealthy).length;
    const quarantined = edges.filter((edge) => edge.isQuarantined).length;
    const summary = h(
      "dl",
      { class: "summary" },
      h("div", {}, h("dt", {}, "Edge locations"), h("dd", { id: "fleet-total" }, String(edges.length))),
      h("div", {}, h("dt", {}, "Healthy"), h("dd", { id: "fleet-healthy" }, String(healthy))),
      h("div", {}, h("dt", {}, "Quarantined"), h("dd", {}, String(quarantined))),
    );
    const sections = regionsOf(edges).map(([region, inRegion]) => {
      const rows = inRegion
        .sort((a, b) => a.locationId.localeCompare(b.locationId))
        .map((edge) => {
          const isHealthy = edge.health && edge.health.isHealthy;
          const versions = Object.entries(edge.activeConfigurations || {});
          return {
            attributes: { "data-location": edge.locationId },
            cells: [
              h("span", {}, h("strong", {}, edge.locationId), h("br"), `${edge.city || ""} ${edge.countryCode || ""}`.trim()),
              badge(isHealthy ? "Healthy" : "Unhealthy"),
              versions.length
                ? h("ul", { class: "plain" }, versions.map(([id, version]) => h("li", {}, `${names.get(id) || id} @ ${version}`)))
                : "none",
              ago(edge.lastHeartbeat),
              edge.isQuarantined
                ? h(
                    "span",
                    {},
                    badge("Quarantined"),
                    can("Admin")
                      ? h("button", { type: "button", class: "small", onclick: () => clearQuarantine(edge) }, `Clear quarantine of ${edge.locationId}`)
                      : null,
                  )
                : "no",
            ],
          };
        });
      const healthyHere = inRegion.filter((edge) => edge.health && edge.health.isHealthy).length;
      return h(
        "section",
        { class: "card", "aria-label": region },
        h("h2", {}, `${region} `, h("span", { class: "muted" }, `${healthyHere} of ${inRegion.length} healthy`)),
        table(null, ["Location", "Health", "Active versions", "Last heartbeat", "Quarantine"], rows, { class: "fleet" }),
      );
    });
    replace(
      body,
      summary,
      edges.length ? sections : h("p", {}, "No edge locations are registered yet."),
    );
  }

  await draw();
  page.every(10000, () => draw().catch(() => {}));
}

export { regionsOf };

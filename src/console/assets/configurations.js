// Configurations: the list, and one configuration's versions, a side-by-side diff of two
// versions, its validation findings and approval (four-eyes: the server refuses an approval
// by the version's own author, and the page says why).

import { get, getAll, post, can, currentUser } from "./api.js";
import { h, replace, table, badge, formatTime, heading, errorBlock, notify } from "./dom.js";

export async function configurationsPage(page) {
  const configurations = await getAll("/configurations", "configurations");
  const rows = configurations
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((c) => ({
      attributes: { "data-configuration": c.name },
      cells: [
        h("a", { href: `#/configurations/${encodeURIComponent(c.configurationId)}` }, c.name),
        c.type,
        c.version,
        badge(c.status),
        c.isDeployed ? `${(c.deployedLocations || []).length} locations` : "no",
        formatTime(c.updatedAt),
      ],
    }));
  replace(
    page.root,
    heading("Configurations"),
    configurations.length
      ? table(null, ["Name", "Type", "Latest version", "Status", "Deployed", "Updated"], rows)
      : h("p", {}, "No configurations yet. Create them through the API or the command-line client."),
  );
}

function show(value) {
  if (value === undefined || value === null) {
    return h("span", { class: "muted" }, "(none)");
  }
  return h("code", {}, JSON.stringify(value));
}

function select(id, label, options, chosen) {
  return [
    h("label", { for: id }, label),
    h(
      "select",
      { id },
      options.map(([value, text]) => h("option", { value, selected: value === chosen }, text)),
    ),
  ];
}

export async function configurationPage(page, configurationId) {
  const path = `/configurations/${encodeURIComponent(configurationId)}`;
  const [configuration, versions] = await Promise.all([
    get(path),
    getAll(`${path}/versions`, "versions"),
  ]);
  const versionOptions = versions.map((v) => [v.version, `${v.version} (${v.status})`]);
  const latest = versions[0] ? versions[0].version : configuration.version;
  const previous = versions[1] ? versions[1].version : latest;

  const diffResult = h("div", { id: "diff-result", "aria-live": "polite" });
  const validation = h("div", { id: "validation-result", "aria-live": "polite" });
  const approval = h("div", { id: "approval-result", "aria-live": "polite" });

  async function compare(event) {
    event.preventDefault();
    const from = document.getElementById("diff-from").value;
    const to = document.getElementById("diff-to").value;
    try {
      // The version list carries no content: each side is read on its own.
      const [diff, left, right] = await Promise.all([
        get(`${path}/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`),
        get(`${path}/versions/${encodeURIComponent(from)}`),
        get(`${path}/versions/${encodeURIComponent(to)}`),
      ]);
      const rows = diff.changes.map((change) => ({
        attributes: { class: `change-${change.changeType.toLowerCase()}` },
        cells: [h("code", {}, change.field || "/"), change.changeType, show(change.oldValue), show(change.newValue)],
      }));
      replace(
        diffResult,
        h(
          "p",
          { class: diff.summary.breakingChanges ? "warning" : "" },
          `${diff.summary.totalChanges} change(s) from ${from} to ${to}; ${diff.summary.breakingChanges} breaking.`,
        ),
        rows.length
          ? table(null, ["Field (JSON pointer)", "Change", `Version ${from}`, `Version ${to}`], rows, { class: "diff" })
          : h("p", {}, "The two versions have the same content."),
        h(
          "div",
          { class: "side-by-side" },
          h("figure", {}, h("figcaption", {}, `Version ${from}`), h("pre", { tabindex: 0 }, JSON.stringify(left ? left.content : null, null, 2))),
          h("figure", {}, h("figcaption", {}, `Version ${to}`), h("pre", { tabindex: 0 }, JSON.stringify(right ? right.content : null, null, 2))),
        ),
      );
    } catch (error) {
      replace(diffResult, errorBlock(error));
    }
  }

  async function validate() {
    try {
      const report = await post(`${path}/validate`, {});
      const findings = (kind, items) =>
        items.length
          ? h("ul", { class: kind }, items.map((f) => h("li", {}, `${f.field}: ${f.message}`)))
          : null;
      replace(
        validation,
        h(
          "p",
          {},
          badge(report.isValid ? "Pass" : "Fail"),
          ` ${report.isValid ? "Valid" : "Invalid"}: ${report.errors.length} error(s), ${report.warnings.length} warning(s), checked ${formatTime(report.validatedAt)}.`,
        ),
        findings("errors", report.errors),
        findings("warnings", report.warnings),
      );
    } catch (error) {
      replace(validation, errorBlock(error));
    }
  }

  async function approve(event) {
    event.preventDefault();
    const version = document.getElementById("approve-version").value;
    const notes = document.getElementById("approve-notes").value;
    try {
      const approved = await post(`${path}/approve`, { version, notes });
      notify(`Version ${version} of ${approved.name} is approved.`);
      await configurationPage(page, configurationId);
    } catch (error) {
      replace(approval, errorBlock(error));
    }
  }

  const me = currentUser();
  const unapproved = versions.filter((v) => v.status !== "Approved");
  const approveForm = can("Admin")
    ? unapproved.length
      ? h(
          "form",
          { class: "inline-form", onsubmit: approve },
          select("approve-version", "Version", unapproved.map((v) => [v.version, `${v.version} by ${v.createdBy}`]), unapproved[0].version),
          h("label", { for: "approve-notes" }, "Notes"),
          h("input", { id: "approve-notes", name: "notes", maxlength: 1000 }),
          h("button", { type: "submit", id: "approve-submit" }, "Approve"),
          unapproved.some((v) => v.createdBy === me.username)
            ? h("p", { class: "hint" }, "Four-eyes: a version you wrote must be approved by another Admin.")
            : null,
        )
      : h("p", {}, "Every version is approved.")
    : h("p", { class: "muted" }, "Approving needs the Admin role.");

  const hasApproved = versions.some((v) => v.status === "Approved");
  replace(
    page.root,
    heading(
      configuration.name,
      h("p", { class: "subtitle" }, `${configuration.type} · latest ${configuration.version} · `, badge(configuration.status)),
      can("Operator") && hasApproved
        ? h("a", { class: "button", href: `#/deployments/new/${encodeURIComponent(configurationId)}` }, "Deploy…")
        : null,
    ),
    h("p", {}, h("a", { href: "#/configurations" }, "← All configurations")),
    configuration.description ? h("p", {}, configuration.description) : null,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Versions"),
      table(
        null,
        ["Version", "Status", "Written by", "Written at", "Approved by", "Tags", "Change"],
        versions.map((v) => ({
          attributes: { "data-version": v.version },
          cells: [
            v.version,
            badge(v.status),
            v.createdBy,
            formatTime(v.createdAt),
            v.approvedBy ? `${v.approvedBy}, ${formatTime(v.approvedAt)}` : "—",
            (v.tags || []).join(", ") || "—",
            v.changeDescription || "—",
          ],
        })),
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Compare versions"),
      versions.length > 1
        ? h(
            "form",
            { class: "inline-form", onsubmit: compare },
            select("diff-from", "From", versionOptions, previous),
            select("diff-to", "To", versionOptions, latest),
            h("button", { type: "submit", id: "diff-submit" }, "Compare"),
          )
        : h("p", {}, "There is only one version."),
      diffResult,
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Validation"),
      can("Developer")
        ? h("button", { type: "button", id: "validate", onclick: validate }, `Validate version ${configuration.version}`)
        : h("p", { class: "muted" }, "Validating needs the Developer role."),
      validation,
    ),
    h("section", { class: "card" }, h("h2", {}, "Approval"), approveForm, approval),
  );
}

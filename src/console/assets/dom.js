// Small helpers to build the page from data without HTML strings (the Content-Security-Policy
// and plain safety both want text to stay text), and the formats every page shares.

/**
 * `h("a", {href: "#/x", class: "c"}, "text", child)` makes an element. Attribute values of
 * `false`/`null`/`undefined` are left out; `on*` functions become listeners.
 */
export function h(tag, attributes, ...children) {
  const element = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "value" && "value" in element) {
      element.value = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    if (Array.isArray(child)) {
      append(element, child);
    } else if (child instanceof Node) {
      element.appendChild(child);
    } else {
      element.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** Replaces the children of `element`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A table with a caption, headers and rows (arrays of cells: text or nodes). */
export function table(caption, headers, rows, attributes) {
  return h(
    "table",
    attributes || {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          row.attributes || {},
          (row.cells || row).map((cell) => h("td", {}, cell)),
        ),
      ),
    ),
  );
}

/** A status word in a coloured badge; the word itself carries the meaning. */
export function badge(text, tone) {
  return h("span", { class: `badge badge-${tone || toneOf(text)}` }, text);
}

const TONES = {
  Completed: "good",
  Approved: "good",
  Healthy: "good",
  Acked: "good",
  Pass: "good",
  RolledBack: "bad",
  Failed: "bad",
  Unhealthy: "bad",
  Nacked: "bad",
  TimedOut: "bad",
  Fail: "bad",
  RollbackFailed: "bad",
  Quarantined: "bad",
  Paused: "warn",
  AwaitingApproval: "warn",
  Inconclusive: "warn",
  Warn: "warn",
  Draft: "neutral",
  PendingApproval: "warn",
  Skipped: "neutral",
  Canary: "info",
  InProgress: "info",
  Pending: "neutral",
  Pushed: "info",
  RollingBack: "warn",
};

function toneOf(text) {
  return TONES[text] || "neutral";
}

/** A labelled progress bar: `acked / total` and the percentage in words. */
export function progressBar(label, done, total, id) {
  const percent = total > 0 ? Math.round((100 * done) / total) : 0;
  const barId = id || `progress-${Math.random().toString(36).slice(2)}`;
  return h(
    "div",
    { class: "progress-row" },
    h("label", { for: barId }, label),
    h("progress", { id: barId, max: 100, value: percent }, `${percent}%`),
    h("span", { class: "progress-figure" }, `${done} / ${total} (${percent}%)`),
  );
}

export function formatTime(text) {
  if (!text) {
    return "—";
  }
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) {
    return String(text);
  }
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** "4 s ago", "3 min ago": how fresh a heartbeat is, with the exact time kept in a title. */
export function ago(text) {
  if (!text) {
    return h("span", {}, "never");
  }
  const seconds = Math.max(0, Math.round((Date.now() - new Date(text).getTime()) / 1000));
  const words =
    seconds < 90
      ? `${seconds} s ago`
      : seconds < 5400
        ? `${Math.round(seconds / 60)} min ago`
        : `${Math.round(seconds / 3600)} h ago`;
  return h("time", { datetime: text, title: formatTime(text) }, words);
}

export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) {
    return "—";
  }
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export const percent = (value, digits = 2) =>
  value === null || value === undefined ? "—" : `${number(value, digits)}%`;
export const millis = (value, digits = 1) =>
  value === null || value === undefined ? "—" : `${number(value, digits)} ms`;

/** A message block for a failed call: the API's message and its field details. */
export function errorBlock(error) {
  const details = (error.details || []).map((d) =>
    h("li", {}, d.field ? `${d.field}: ${d.message}` : d.message),
  );
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, error.message || String(error)),
    details.length ? h("ul", {}, details) : null,
  );
}

/** Short display of an id such as `deploy-<uuid>`. */
export function shortId(id) {
  const text = String(id || "");
  const dash = text.indexOf("-");
  return dash > 0 && text.length > dash + 9 ? text.slice(0, dash + 9) : text;
}

export function heading(text, ...rest) {
  return h("div", { class: "page-head" }, h("h1", {}, text), ...rest);
}

/** A short message in the banner under the header (read out by screen readers). */
export function notify(text) {
  const notice = document.getElementById("notice");
  if (!notice) {
    return;
  }
  notice.textContent = text || "";
  notice.hidden = !text;
  clearTimeout(noticeTimer);
  if (text) {
    noticeTimer = setTimeout(() => notify(""), 8000);
  }
}

let noticeTimer = null;

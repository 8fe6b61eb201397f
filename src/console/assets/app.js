// The console's shell: sign-in, the page navigation (hash routes, so every page is a real
// link), and the life of a page: its polling and streams stop when another page opens.

import { signIn, signOut, currentUser, whenSignedOut, ApiError } from "./api.js";
import { replace, h, notify } from "./dom.js";
import { fleetPage } from "./fleet.js";
import { configurationsPage, configurationPage } from "./configurations.js";
import { deploymentsPage, deploymentPage, newDeploymentPage } from "./deployments.js";
import { metricsPage } from "./metrics.js";

const ROUTES = [
  [/^#\/fleet$/, "fleet", () => fleetPage],
  [/^#\/configurations$/, "configurations", () => configurationsPage],
  [/^#\/configurations\/([^/]+)$/, "configurations", () => configurationPage],
  [/^#\/deployments$/, "deployments", () => deploymentsPage],
  [/^#\/deployments\/new(?:\/([^/]+))?$/, "deployments", () => newDeploymentPage],
  [/^#\/deployments\/([^/]+)$/, "deployments", () => deploymentPage],
  [/^#\/metrics$/, "metrics", () => metricsPage],
];

const byId = (id) => document.getElementById(id);

// Content-Security-Policy violations are kept where a test (or a curious person with the
// developer tools) can read them: the console is meant to need none.
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective}: ${event.blockedURI}`);
});

let current = null;

function stopCurrentPage() {
  if (current) {
    current.controller.abort();
    for (const timer of current.timers) {
      clearInterval(timer);
    }
    current = null;
  }
}

/** What a page gets: where to draw, a signal that aborts when the page closes, polling. */
function pageContext(root) {
  const controller = new AbortController();
  const context = {
    root,
    controller,
    timers: [],
    signal: controller.signal,
    every(milliseconds, work) {
      const timer = setInterval(() => {
        if (!document.hidden && !controller.signal.aborted) {
          work();
        }
      }, milliseconds);
      this.timers.push(timer);
    },
    get closed() {
      return controller.signal.aborted;
    },
  };
  return context;
}

function showSignIn(message) {
  stopCurrentPage();
  notify("");
  byId("nav").hidden = true;
  byId("who").hidden = true;
  replace(byId("page"));
  byId("sign-in").hidden = false;
  const error = byId("sign-in-error");
  error.hidden = !message;
  error.textContent = message || "";
  byId("password").value = "";
  byId("username").focus();
}

async function render() {
  if (!currentUser()) {
    showSignIn("");
    return;
  }
  const hash = location.hash || "#/fleet";
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!route) {
    location.hash = "#/fleet";
    return;
  }
  const [pattern, section, page] = route;
  const match = hash.match(pattern);
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === section) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  stopCurrentPage();
  const root = byId("page");
  replace(root, h("p", { class: "loading" }, "Loading…"));
  current = pageContext(root);
  const context = current;
  try {
    await page()(context, ...match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))));
  } catch (error) {
    if (context.closed || (error instanceof ApiError && error.status === 401)) {
      return;
    }
    replace(
      root,
      h("div", { class: "error", role: "alert" }, h("p", {}, `Could not load this page: ${error.message}`)),
    );
  }
}

function signedIn() {
  const user = currentUser();
  byId("sign-in").hidden = true;
  byId("nav").hidden = false;
  byId("who").hidden = false;
  byId("who-name").textContent = `${user.username} (${user.role})`;
  render().then(() => byId("main").focus({ preventScroll: true }));
}

async function submitSignIn(event) {
  event.preventDefault();
  const username = byId("username").value.trim();
  const password = byId("password").value;
  const error = byId("sign-in-error");
  if (!username || !password) {
    error.hidden = false;
    error.textContent = "Enter your username and password.";
    return;
  }
  const button = byId("sign-in-submit");
  button.disabled = true;
  try {
    await signIn(username, password);
    byId("password").value = "";
    signedIn();
  } catch (failure) {
    error.hidden = false;
    error.textContent =
      failure instanceof ApiError && failure.status === 401
        ? "Wrong username or password."
        : `Sign-in failed: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

whenSignedOut(showSignIn);
byId("sign-in-form").addEventListener("submit", submitSignIn);
byId("sign-out").addEventListener("click", () => signOut("You have signed out."));
window.addEventListener("hashchange", () => {
  if (currentUser()) {
    render();
  }
});
showSignIn("");

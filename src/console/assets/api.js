// The console's one door to the API: the session (token and user, held in memory for this
// tab only), JSON calls with the bearer token, and the deployment event stream.

const BASE = "/api/v1";

let session = null;
let onSignedOut = () => {};

/** Called with a message when the server refuses the token (401): the app shows sign-in. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function currentUser() {
  return session ? session.user : null;
}

const RANKS = { Viewer: 0, Developer: 1, Operator: 2, Admin: 3 };

/** True when the signed-in user's role is `role` or above. */
export function can(role) {
  const user = currentUser();
  return !!user && (RANKS[user.role] ?? -1) >= RANKS[role];
}

export function signOut(message) {
  session = null;
  onSignedOut(message || "");
}

/** An API failure, carrying the SPEC §5 error body's code, message and details. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed with status ${status}`);
    this.status = status;
    this.code = error.code || "";
    this.details = Array.isArray(error.details) ? error.details : [];
    this.traceId = error.traceId || "";
  }
}

export async function signIn(username, password) {
  const response = await fetch(`${BASE}/authentication/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
    credentials: "omit",
  });
  const body = await readJson(response);
  if (!response.ok) {
    throw new ApiError(response.status, body);
  }
  session = { token: body.token, user: body.user, expiresAt: body.expiresAt };
  return session.user;
}

async function readJson(response) {
  const text = await response.text();
  if (!text) {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function headers(extra) {
  const all = { Accept: "application/json", ...extra };
  if (session) {
    all.Authorization = `Bearer ${session.token}`;
  }
  return all;
}

/** Calls `method path` with an optional JSON body; resolves to the parsed answer. */
export async function call(method, path, body, { signal } = {}) {
  // Signed out already (the sign-in form shows, with any message the sign-out left): a
  // request still on its way must not replace that message.
  if (!session) {
    throw new ApiError(401, null);
  }
  const init = { method, headers: headers(), credentials: "omit", signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(BASE + path, init);
  const answer = await readJson(response);
  if (response.status === 401) {
    signOut("Your session has ended. Please sign in again.");
  }
  if (!response.ok) {
    throw new ApiError(response.status, answer);
  }
  return answer;
}

export const get = (path, options) => call("GET", path, undefined, options);
export const post = (path, body, options) => call("POST", path, body ?? {}, options);

/** Every item of a paged list, following `nextOffset` (at most `cap` items). */
export async function getAll(path, plural, cap = 1000) {
  const items = [];
  let offset = 0;
  for (;;) {
    const separator = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${separator}limit=100&offset=${offset}`);
    items.push(...(page[plural] || []));
    if (!page.hasMore || page.nextOffset == null || items.length >= cap) {
      return items;
    }
    offset = page.nextOffset;
  }
}

/**
 * Follows a deployment's Server-Sent Events with fetch() so that the token travels in the
 * Authorization header, never in a URL (EventSource cannot send headers). Calls
 * `onEvent(name, data)` per event; resolves when the stream ends (the deployment is over or
 * `signal` aborted it).
 */
export async function followEvents(deploymentId, onEvent, signal) {
  if (!session) {
    return;
  }
  const response = await fetch(`${BASE}/deployments/${encodeURIComponent(deploymentId)}/events`, {
    headers: headers({ Accept: "text/event-stream" }),
    credentials: "omit",
    signal,
  });
  if (response.status === 401) {
    signOut("Your session has ended. Please sign in again.");
  }
  if (!response.ok || !response.body) {
    throw new ApiError(response.status, await readJson(response));
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length) {
          let parsed = null;
          try {
            parsed = JSON.parse(data.join("\n"));
          } catch {
            parsed = null;
          }
          onEvent(name, parsed);
        }
        name = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        name = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}

// The signed-in session. The access token lives only in this module's memory; the
// refresh token is an HttpOnly cookie the page never sees. Refreshing sends the
// readable `ziggurat_csrf` cookie back as a header (double submit), which a
// cross-site page cannot do.

const SESSION_HEADER = { "X-Ziggurat-Session": "cookie" };
const REFRESH_MARGIN_S = 30;

let accessToken = null;
let refreshTimer = null;
let refreshing = null;
const listeners = new Set();

export function token() { return accessToken; }

export function isSignedIn() { return accessToken !== null; }

/** Called with `true` on sign-in and `false` when the session ends (sign-out or refresh failure). */
export function onChange(listener) { listeners.add(listener); }

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)ziggurat_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function adopt(tokens) {
  const wasSignedIn = accessToken !== null;
  accessToken = tokens.access_token;
  clearTimeout(refreshTimer);
  const delay = Math.max(5, (tokens.expires_in || 300) - REFRESH_MARGIN_S) * 1000;
  refreshTimer = setTimeout(() => { refresh(); }, delay);
  if (!wasSignedIn) listeners.forEach((listener) => listener(true));
}

function drop() {
  const wasSignedIn = accessToken !== null;
  accessToken = null;
  clearTimeout(refreshTimer);
  if (wasSignedIn) listeners.forEach((listener) => listener(false));
}

async function post(path, body, extraHeaders = {}) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", ...SESSION_HEADER, ...extraHeaders },
    body: JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data?.error?.code;
    error.retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw error;
  }
  return data;
}

export async function login(email, password) {
  adopt(await post("/api/auth/login", { email, password }));
}

export async function register(email, password, invitation) {
  const body = { email, password };
  if (invitation) body.invitation = invitation;
  const registration = await post("/api/auth/register", body);
  adopt(registration.tokens);
}

/**
 * A fresh access token from the refresh cookie; false when there is no session.
 * Concurrent callers in a tab share one request, and tabs take turns, because each refresh rotates
 * the cookie.
 */
export function refresh() {
  if (refreshing) return refreshing;
  const run = () => {
    const csrf = csrfToken(); // read inside the lock: another tab may just have rotated it
    if (!csrf) { drop(); return false; }
    return post("/api/auth/refresh", {}, { "X-CSRF-Token": csrf })
      .then((tokens) => { adopt(tokens); return true; })
      .catch((error) => {
        if (error.status === undefined || error.status >= 500) return accessToken !== null; // keep trying later
        drop();
        return false;
      });
  };
  // Refresh tokens are single-use: two tabs spending the same cookie at once would look like theft and
  // end the session, so tabs take turns (the second one then sends the cookie the first one received).
  const locked = navigator.locks ? navigator.locks.request("ziggurat-refresh", run) : Promise.resolve(run());
  refreshing = locked.finally(() => { refreshing = null; });
  return refreshing;
}

export async function logout() {
  const csrf = csrfToken();
  try {
    if (csrf) await post("/api/auth/logout", {}, { "X-CSRF-Token": csrf });
  } finally {
    drop();
  }
}

/** Where the OIDC button goes; the callback sets the cookies and comes back to `next`. */
export function oidcLoginUrl(next = "/") {
  return `/api/auth/oidc/login?next=${encodeURIComponent(next)}`;
}

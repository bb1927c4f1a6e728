// JSON calls to the API with the in-memory access token. A 401 triggers one silent
// refresh and a retry; errors become `ApiError`s carrying the server's message,
// code and Retry-After, so views can say exactly what went wrong.

import * as session from "./session.js";
import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, message, { code = null, type = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
    this.retryAfter = retryAfter;
  }

  /** What to show a person: the Retry-After wait for 429s, the server's message otherwise. */
  get userMessage() {
    if (this.status === 429 && this.retryAfter) return t("retryIn", { s: this.retryAfter });
    if (this.status === 0) return t("networkError");
    return this.message;
  }

  get isNetwork() { return this.status === 0; }

  static async from(response) {
    const body = await response.json().catch(() => null);
    const error = body?.error || {};
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    return new ApiError(response.status, error.message || `HTTP ${response.status}`,
      { code: error.code, type: error.type, retryAfter });
  }

  /** An error body sent inside an event stream (`event: error`). */
  static fromBody(body) {
    const error = body?.error || {};
    return new ApiError(error.type === "rate_limit_error" ? 429 : 500, error.message || t("failed"),
      { code: error.code, type: error.type });
  }
}

async function send(method, path, { body, headers = {}, signal } = {}) {
  const init = { method, headers: { ...headers }, signal, credentials: "same-origin" };
  if (session.token()) init.headers.Authorization = `Bearer ${session.token()}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, t("networkError"), { code: "network" });
  }
}

/** The raw Response (for streams and downloads); throws ApiError unless it is 2xx. */
export async function raw(method, path, options = {}) {
  let response = await send(method, path, options);
  if (response.status === 401 && (await session.refresh())) response = await send(method, path, options);
  if (!response.ok) throw await ApiError.from(response);
  return response;
}

/** The parsed JSON body (null for 204). */
export async function request(method, path, options = {}) {
  const response = await raw(method, path, options);
  return response.status === 204 ? null : response.json();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, body, options = {}) => request("POST", path, { ...options, body });
export const patch = (path, body) => request("PATCH", path, { body });
export const put = (path, body) => request("PUT", path, { body });
export const del = (path) => request("DELETE", path);

/** `?a=1&b=2` from an object, leaving out empty values. */
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
}

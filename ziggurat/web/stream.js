// Reading a chat turn's server-sent events from a fetch() response (EventSource
// cannot POST or send a bearer token), and carrying on after a network loss: the
// reply keeps being generated on the server, so we resume it with
// `GET /api/messages/{id}/stream` and `Last-Event-ID`, from any gateway.

import * as api from "./api.js";
import { ApiError } from "./api.js";

/** Yields `{event, data, id}` for each SSE frame of `response`. */
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const parsed = parseFrame(frame);
        if (parsed) yield parsed;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseFrame(frame) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { event, id, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function waitOnline() {
  if (navigator.onLine) return Promise.resolve();
  return new Promise((resolve) => window.addEventListener("online", resolve, { once: true }));
}

/**
 * Runs one turn to its end. `start()` returns the Response of the POST that began it (or of a
 * resumed stream, whose reply id is `initialReplyId`).
 * Handlers: onStart({user_message, assistant_message_id, context}), onDelta(text),
 * onDone(message), onReconnecting(), onReconnected(). Resolves with the final message;
 * rejects with an ApiError when the server reports a failure or the turn never started.
 */
export async function runTurn(start, handlers, signal, initialReplyId = null) {
  let replyId = initialReplyId;
  let lastEventId = null;
  let response = await start();
  let attempt = 0;
  for (;;) {
    try {
      for await (const { event, id, data } of readEvents(response)) {
        if (event === "message") {
          replyId = data.assistant_message_id;
          handlers.onStart?.(data);
        } else if (event === "delta") {
          if (id) lastEventId = id;
          handlers.onDelta?.(data.content || "");
        } else if (event === "done") {
          handlers.onDone?.(data);
          return data;
        } else if (event === "error") {
          throw ApiError.fromBody(data);
        }
        attempt = 0;
      }
    } catch (error) {
      if (error instanceof ApiError || signal?.aborted) throw error;
      // anything else is the connection breaking mid-stream: resume below
    }
    if (!replyId) throw new ApiError(0, "stream ended before it started", { code: "network" });
    handlers.onReconnecting?.();
    response = await reconnect(replyId, lastEventId, () => attempt++, signal);
    handlers.onReconnected?.();
  }
}

async function reconnect(replyId, lastEventId, nextAttempt, signal) {
  for (;;) {
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    await waitOnline();
    await sleep(Math.min(8000, 500 * 2 ** nextAttempt()));
    try {
      const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
      return await api.raw("GET", `/api/messages/${encodeURIComponent(replyId)}/stream`, { headers, signal });
    } catch (error) {
      if (!(error instanceof ApiError) || !error.isNetwork) {
        if (error instanceof ApiError && error.status >= 500) continue;
        throw error;
      }
    }
  }
}

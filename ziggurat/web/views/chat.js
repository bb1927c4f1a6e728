// The conversation view: the shown path of messages, the composer, and the turn
// being streamed. After each turn the conversation is read again, so ids, branch
// counters and statuses always come from the server.

import * as api from "../api.js";
import { h, clear, icon, modal, toast } from "../dom.js";
import { t } from "../i18n.js";
import { setPath } from "../router.js";
import { runTurn } from "../stream.js";
import { messageView } from "./message.js";

const STOP_GRACE_MS = 5000;

/**
 * A fresh `Idempotency-Key` for one turn. A browser may send a POST again by itself when a reused
 * connection drops before the answer starts; with the key the server replays the same turn instead
 * of starting a second one. (getRandomValues, unlike randomUUID, works on plain-http deployments.)
 */
function turnKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return { "Idempotency-Key": Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") };
}

export function createChat({ shell, sidebar, models }) {
  let conversation = null; // ConversationDetail, or null for a new chat
  let views = [];
  let turn = null; // {replyId, conversationId, controller}
  let pendingSystemPrompt = null;
  const feedback = new Map();

  const list = h("div", { class: "messages", role: "log", "aria-live": "polite" });
  const scroller = h("div", { class: "scroller" }, list);
  const input = h("textarea", {
    class: "composer-input", rows: 1, placeholder: t("messagePlaceholder"), "aria-label": t("messagePlaceholder"),
    maxlength: 32000,
  });
  const sendButton = h("button", { type: "submit", class: "send", "aria-label": t("send"), title: t("send") }, icon("send"));
  const stopButton = h("button", { type: "button", class: "send stop", "aria-label": t("stop"), title: t("stop"),
    hidden: true, onclick: stop }, icon("stop"));
  const form = h("form", { class: "composer" }, input, sendButton, stopButton);
  const hint = h("p", { class: "hint", text: t("composerHint") });
  const element = h("div", { class: "chat" }, scroller, h("div", { class: "composer-wrap" }, form, hint));

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", autosize);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || turn) return;
    input.value = "";
    autosize();
    send(text);
  });

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    element.classList.toggle("busy", busy);
  }

  async function open(conversationId) {
    if (turn && turn.conversationId !== conversationId) turn.controller.abort();
    if (!conversationId) {
      conversation = null;
      pendingSystemPrompt = null;
      renderAll();
      models.select(null);
      input.focus();
      return;
    }
    try {
      conversation = await api.get(`/api/conversations/${encodeURIComponent(conversationId)}`);
    } catch (error) {
      toast(error.userMessage || error.message, "error");
      conversation = null;
      renderAll();
      return;
    }
    models.select(conversation.model);
    await loadFeedback();
    renderAll();
    toBottom();
    const last = conversation.messages.at(-1);
    if (last && last.role === "assistant" && (last.status === "streaming" || last.status === "pending")) resume(last);
  }

  async function loadFeedback() {
    feedback.clear();
    try {
      const page = await api.get(`/api/feedback${api.query({ limit: 100 })}`);
      for (const item of page.data) {
        if (item.conversation_id === conversation?.id && item.thumb) feedback.set(item.message_id, item.thumb);
      }
    } catch {
      // ratings are a nicety here; the chat works without them
    }
  }

  function renderAll() {
    clear(list);
    views = [];
    if (!conversation || !conversation.messages.length) {
      list.append(h("div", { class: "empty" },
        h("div", { class: "empty-logo", "aria-hidden": "true" }, "Z"),
        h("h1", { text: t("emptyTitle") }), h("p", { class: "muted", text: t("emptySubtitle") })));
      return;
    }
    for (const message of conversation.messages) addView(message);
  }

  function addView(message) {
    if (!views.length) clear(list);
    const view = messageView(message, { onEdit: edit, onRegenerate: regenerate, onSelect: select, onFeedback: rate, feedback });
    views.push(view);
    list.append(view.element);
    return view;
  }

  async function ensureConversation() {
    if (conversation) return conversation.id;
    const created = await api.post("/api/conversations", {
      model: models.value() || null, system_prompt: pendingSystemPrompt || null,
    });
    conversation = { ...created, messages: [] };
    setPath(`/c/${created.id}`);
    sidebar.setActive(created.id);
    return created.id;
  }

  async function send(text) {
    let conversationId;
    try {
      conversationId = await ensureConversation();
    } catch (error) {
      input.value = text;
      toast(error.userMessage || error.message, "error");
      return;
    }
    const path = `/api/conversations/${conversationId}/messages`;
    const started = await stream(conversationId,
      () => api.raw("POST", path, { body: { content: text }, headers: turnKey(), signal: turn.controller.signal }),
      { role: "user", content: text });
    // Refused before it began (a 429, a validation error): give the text back rather than lose it.
    if (!started && !input.value) { input.value = text; autosize(); }
    sidebar.refresh();
    setTimeout(() => sidebar.refresh(), 2500); // the title is written in the background
  }

  async function edit(message, text) {
    truncateFrom(message);
    const path = `/api/conversations/${conversation.id}/messages/${message.id}/edit`;
    await stream(conversation.id,
      () => api.raw("POST", path, { body: { content: text }, headers: turnKey(), signal: turn.controller.signal }),
      { role: "user", content: text });
  }

  async function regenerate(message) {
    if (turn) return;
    truncateFrom(message);
    const path = `/api/conversations/${conversation.id}/messages/${message.id}/regenerate`;
    await stream(conversation.id,
      () => api.raw("POST", path, { body: {}, headers: turnKey(), signal: turn.controller.signal }), null);
  }

  function truncateFrom(message) {
    const index = views.findIndex((view) => view.element.dataset.messageId === message.id);
    if (index >= 0) views.splice(index).forEach((view) => view.element.remove());
  }

  async function select(messageId) {
    if (turn) return;
    try {
      conversation = await api.post(`/api/conversations/${conversation.id}/messages/${messageId}/select`);
      renderAll();
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  /** Streams one turn into new views; `userMessage` is null for a regeneration. True once it started. */
  async function stream(conversationId, start, userMessage) {
    turn = { conversationId, replyId: null, controller: new AbortController() };
    setBusy(true);
    const userView = userMessage ? addView({ ...userMessage, status: "complete" }) : null;
    const reply = addView({ role: "assistant", content: "", status: "pending" });
    toBottom();
    return follow(reply, start, userView);
  }

  function resume(message) {
    turn = { conversationId: conversation.id, replyId: message.id, controller: new AbortController() };
    setBusy(true);
    const reply = views.at(-1);
    reply.setContent("");
    follow(reply, () => api.raw("GET", `/api/messages/${message.id}/stream`, { signal: turn.controller.signal }), null);
  }

  async function follow(reply, start, userView) {
    const current = turn;
    let started = false;
    // A turn that fails before its first event may have reached the server all the same: the
    // connection dropped before the answer, or the browser sent the POST again by itself and the
    // server, seeing the same Idempotency-Key, says the reply is still being written (409). The
    // reload below finds such a reply and follows it; only when there is none is the error shown.
    let failure = null;
    try {
      await runTurn(start, {
        onStart(data) {
          started = true;
          current.replyId = data.assistant_message_id;
          userView?.setMessage(data.user_message);
          reply.element.dataset.messageId = data.assistant_message_id;
          reply.setStatus("streaming");
          if (data.context?.truncated) toast(t("contextTrimmed"));
        },
        onDelta(text) {
          const stick = nearBottom();
          reply.append(text);
          if (stick) requestAnimationFrame(toBottom);
        },
        onDone(message) { reply.setMessage(message); },
        onReconnecting() { shell.setBanner(t("reconnecting")); },
        onReconnected() { shell.setBanner(null); reply.setContent(reply.content()); },
      }, current.controller.signal, current.replyId);
    } catch (error) {
      if (error.name !== "AbortError") {
        const text = error.userMessage || error.message;
        reply.setStatus("error", text); // until the reload replaces it
        if (current.replyId) toast(text, "error");
        else failure = text;
      }
    } finally {
      shell.setBanner(null);
      if (turn === current) {
        turn = null;
        setBusy(false);
        const onScreen = conversation?.id === current.conversationId;
        if (onScreen && (await reload({ follow: failure !== null }))) started = true;
        else if (failure !== null) toast(failure, "error");
      } else if (failure !== null) {
        toast(failure, "error");
      }
    }
    return started;
  }

  /**
   * Reads the conversation again. With `follow`, a reply that is new since the last read and still
   * being written is followed; returns whether anything new had arrived.
   */
  async function reload({ follow: followNew = false } = {}) {
    const known = new Set((conversation?.messages || []).map((message) => message.id));
    try {
      const fresh = await api.get(`/api/conversations/${conversation.id}`);
      const stick = nearBottom();
      conversation = fresh;
      renderAll();
      if (stick) toBottom();
    } catch {
      return false; // keep what is on screen; the next action reloads
    }
    if (!followNew || turn) return false;
    const last = conversation.messages.at(-1);
    const arrived = Boolean(last) && !known.has(last.id);
    if (arrived && last.role === "assistant" && ["streaming", "pending"].includes(last.status)) resume(last);
    return arrived;
  }

  async function stop() {
    const current = turn;
    if (!current) return;
    stopButton.disabled = true;
    try {
      if (current.replyId) {
        await api.post(`/api/conversations/${current.conversationId}/messages/${current.replyId}/stop`);
      }
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    } finally {
      stopButton.disabled = false;
    }
    // The stream ends by itself with the stopped reply; give up on it if it does not.
    setTimeout(() => { if (turn === current) current.controller.abort(); }, STOP_GRACE_MS);
  }

  async function rate(message, thumb) {
    let body = { thumb };
    if (thumb === "down") {
      const comment = h("textarea", { rows: 2, "aria-label": t("feedbackComment"), id: "fb-comment" });
      const correction = h("textarea", { rows: 5, "aria-label": t("feedbackCorrection"), id: "fb-correction" });
      const extra = await modal(t("feedbackTitle"), h("div", { class: "fields" },
        h("label", { for: "fb-comment", text: t("feedbackComment") }), comment,
        h("label", { for: "fb-correction", text: t("feedbackCorrection") }), correction),
      [{ label: t("cancel") }, { label: t("submit"), primary: true, submit: true,
        value: () => ({ comment: comment.value.trim(), corrected_answer: correction.value.trim() }) }]);
      if (extra === null) return;
      if (extra.comment) body.comment = extra.comment;
      if (extra.corrected_answer) body.corrected_answer = extra.corrected_answer;
    }
    try {
      await api.put(`/api/messages/${message.id}/feedback`, body);
      feedback.set(message.id, thumb);
      views.forEach((view) => view.refreshActions());
      toast(t("feedbackThanks"));
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  /** The per-conversation system prompt, kept until the chat is created for a new one. */
  async function editSystemPrompt() {
    const current = conversation ? conversation.system_prompt : pendingSystemPrompt;
    const area = h("textarea", { rows: 6, id: "system-prompt", value: current || "", maxlength: 16000 });
    const value = await modal(t("chatSettings"), h("div", { class: "fields" },
      h("label", { for: "system-prompt", text: t("systemPrompt") }), area,
      h("p", { class: "muted small", text: t("systemPromptHint") })),
    [{ label: t("cancel") }, { label: t("save"), primary: true, submit: true, value: () => area.value.trim() }]);
    if (value === null) return;
    if (!conversation) { pendingSystemPrompt = value; toast(t("saved")); return; }
    try {
      conversation = { ...conversation, ...(await api.patch(`/api/conversations/${conversation.id}`, { system_prompt: value || null })) };
      toast(t("saved"));
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  async function changeModel(model) {
    if (!conversation) return;
    try {
      await api.patch(`/api/conversations/${conversation.id}`, { model });
      conversation.model = model;
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  return { element, open, editSystemPrompt, changeModel, currentId: () => conversation?.id ?? null,
    focus: () => input.focus() };
}

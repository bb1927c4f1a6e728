// One message on screen: the user's as plain text, the assistant's as sanitised
// markdown, with the actions under it (copy, edit, regenerate, feedback) and the
// `‹ 2/3 ›` switch between versions.

import { h, clear, icon, iconButton } from "../dom.js";
import { t } from "../i18n.js";
import { copyText, renderMarkdown } from "../markdown.js";

/**
 * Returns {element, setContent(text), setStatus(status), content()}.
 * `actions`: onEdit(message, text), onRegenerate(message), onSelect(id), onFeedback(message, thumb), feedback
 */
export function messageView(message, actions) {
  const isUser = message.role === "user";
  let content = message.content || "";
  let status = message.status || "complete";
  let renderQueued = false;

  const body = h("div", { class: isUser ? "bubble" : "markdown" });
  const note = h("div", { class: "status-note", role: "status" });
  const toolbar = h("div", { class: "msg-actions" });
  const element = h("article", {
    class: `message ${isUser ? "user" : "assistant"}`,
    "data-message-id": message.id || "",
    "aria-label": isUser ? t("you") : t("assistant"),
  }, isUser ? null : h("div", { class: "avatar", "aria-hidden": "true" }, "Z"),
  h("div", { class: "msg-main" }, body, note, toolbar));

  function paint() {
    renderQueued = false;
    if (isUser) {
      body.textContent = content;
    } else {
      clear(body).append(renderMarkdown(content));
      if (status === "streaming" || status === "pending") body.append(h("span", { class: "cursor", "aria-hidden": "true" }));
    }
  }

  function paintStatus() {
    element.classList.toggle("streaming", status === "streaming" || status === "pending");
    element.dataset.status = status;
    note.textContent = status === "cancelled" ? t("stopped") : status === "error" ? (message.errorText || t("failed")) : "";
    note.className = `status-note ${status}`;
    paintActions();
  }

  function paintActions() {
    clear(toolbar);
    if (status === "streaming" || status === "pending") return;
    const branch = branchSwitch(message, actions.onSelect);
    if (isUser) {
      if (message.id) toolbar.append(iconButton("edit", t("edit"), startEdit));
      toolbar.append(iconButton("copy", t("copy"), () => copyText(content)));
      if (branch) toolbar.prepend(branch);
      return;
    }
    if (branch) toolbar.append(branch);
    toolbar.append(iconButton("copy", t("copy"), () => copyText(content)));
    if (message.id) {
      toolbar.append(iconButton("refresh", t("regenerate"), () => actions.onRegenerate(message)));
      const given = actions.feedback?.get(message.id);
      toolbar.append(
        iconButton("up", t("goodAnswer"), () => actions.onFeedback(message, "up"),
          { "aria-pressed": String(given === "up"), class: `icon-btn thumb${given === "up" ? " on" : ""}` }),
        iconButton("down", t("badAnswer"), () => actions.onFeedback(message, "down"),
          { "aria-pressed": String(given === "down"), class: `icon-btn thumb${given === "down" ? " on" : ""}` }));
    }
    if (message.model) toolbar.append(h("span", { class: "model-tag", text: message.model }));
  }

  function startEdit() {
    const editor = h("textarea", { class: "edit-box", "aria-label": t("edit"), value: content, rows: 3 });
    const save = h("button", { type: "button", class: "btn primary small", text: t("saveAndSubmit"),
      onclick: () => { const text = editor.value.trim(); if (text) actions.onEdit(message, text); } });
    const cancel = h("button", { type: "button", class: "btn small", text: t("cancel"),
      onclick: () => { paint(); paintActions(); } });
    clear(body).append(editor, h("div", { class: "edit-actions" }, cancel, save));
    clear(toolbar);
    editor.focus();
  }

  paint();
  paintStatus();

  return {
    element,
    content: () => content,
    setContent(text) {
      content = text;
      if (!renderQueued) { renderQueued = true; requestAnimationFrame(paint); }
    },
    append(text) { this.setContent(content + text); },
    setStatus(next, errorText) {
      status = next;
      if (errorText) message.errorText = errorText;
      paint();
      paintStatus();
    },
    setMessage(stored) {
      Object.assign(message, stored);
      content = stored.content ?? content;
      element.dataset.messageId = message.id || "";
      this.setStatus(stored.status || status);
    },
    refreshActions: paintActions,
  };
}

function branchSwitch(message, onSelect) {
  if (!message.sibling_count || message.sibling_count < 2) return null;
  const index = message.sibling_index;
  const ids = message.sibling_ids;
  return h("div", { class: "branch", role: "group", "aria-label": `${index + 1}/${message.sibling_count}` },
    h("button", { type: "button", class: "icon-btn", "aria-label": t("previous"), title: t("previous"),
      disabled: index === 0, onclick: () => onSelect(ids[index - 1]) }, icon("left")),
    h("span", { class: "branch-count", text: `${index + 1} / ${message.sibling_count}` }),
    h("button", { type: "button", class: "icon-btn", "aria-label": t("next"), title: t("next"),
      disabled: index >= message.sibling_count - 1, onclick: () => onSelect(ids[index + 1]) }, icon("right")));
}

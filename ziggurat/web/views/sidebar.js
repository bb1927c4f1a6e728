// The conversation list: new chat, search, and per-conversation rename, pin and
// delete. Pinned conversations come first, as the API's own order has them.

import * as api from "../api.js";
import { h, clear, icon, iconButton, modal, toast } from "../dom.js";
import { t } from "../i18n.js";
import { navigate } from "../router.js";

const PAGE = 50;

export function createSidebar({ onNavigate, footer }) {
  let conversations = [];
  let activeId = null;
  let searchTimer = null;
  let searchQuery = "";

  const list = h("nav", { class: "conv-list", "aria-label": t("recent") });
  const search = h("input", {
    type: "search", class: "search", placeholder: t("search"), "aria-label": t("search"),
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { searchQuery = search.value.trim(); render(); }, 250);
    },
  });
  const newChat = h("button", {
    type: "button", class: "btn new-chat", onclick: () => { onNavigate(); navigate("/"); },
  }, icon("plus"), h("span", { text: t("newChat") }));

  const element = h("aside", { class: "sidebar", "aria-label": t("menu") },
    h("div", { class: "side-head" },
      h("a", { href: "/", "data-link": true, class: "brand", onclick: onNavigate },
        h("img", { src: document.querySelector("link[rel=icon]").href, alt: "", class: "logo" }),
        h("span", { text: t("appName") })),
      newChat),
    h("div", { class: "search-wrap" }, icon("search"), search),
    list, footer);

  async function refresh() {
    try {
      const page = await api.get(`/api/conversations${api.query({ limit: PAGE })}`);
      conversations = page.data;
      render();
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  async function render() {
    if (searchQuery) return renderSearch();
    clear(list);
    if (!conversations.length) {
      list.append(h("p", { class: "muted empty-list", text: t("noConversations") }));
      return;
    }
    const pinned = conversations.filter((c) => c.pinned);
    const rest = conversations.filter((c) => !c.pinned);
    if (pinned.length) list.append(h("h3", { text: t("pinned") }), ...pinned.map(item));
    if (rest.length) list.append(h("h3", { text: t("recent") }), ...rest.map(item));
  }

  async function renderSearch() {
    const query = searchQuery;
    let hits = [];
    try {
      hits = (await api.get(`/api/conversations/search${api.query({ q: query, limit: 30 })}`)).data;
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
    if (query !== searchQuery) return;
    clear(list);
    if (!hits.length) { list.append(h("p", { class: "muted empty-list", text: t("nothingHere") })); return; }
    list.append(...hits.map((hit) => h("a", {
      href: `/c/${hit.conversation.id}`, "data-link": true, class: "conv-item search-hit", onclick: onNavigate,
    }, h("span", { class: "conv-title", text: hit.conversation.title || t("untitled") }),
    h("span", { class: "snippet" }, highlight(hit.snippet, hit.highlights)))));
  }

  function item(conversation) {
    const title = conversation.title || t("untitled");
    const row = h("div", { class: `conv-row${conversation.id === activeId ? " active" : ""}` },
      h("a", {
        href: `/c/${conversation.id}`, "data-link": true, class: "conv-item", title,
        "aria-current": conversation.id === activeId ? "page" : null, onclick: onNavigate,
      }, conversation.pinned ? icon("pin") : null, h("span", { class: "conv-title", text: title })),
      h("div", { class: "conv-actions" },
        iconButton("edit", t("rename"), () => rename(conversation)),
        iconButton("pin", conversation.pinned ? t("unpin") : t("pin"), () => togglePin(conversation),
          { "aria-pressed": String(conversation.pinned) }),
        iconButton("trash", t("delete"), () => remove(conversation))));
    return row;
  }

  async function rename(conversation) {
    const input = h("input", { type: "text", value: conversation.title || "", maxlength: 200, "aria-label": t("title") });
    setTimeout(() => input.select(), 0);
    const title = await modal(t("renameTitle"), h("label", { class: "field" }, input),
      [{ label: t("cancel") }, { label: t("save"), primary: true, submit: true, value: () => input.value.trim() }]);
    if (title === null) return;
    await update(conversation, { title: title || null });
  }

  async function togglePin(conversation) {
    await update(conversation, { pinned: !conversation.pinned });
  }

  async function update(conversation, changes) {
    try {
      await api.patch(`/api/conversations/${conversation.id}`, changes);
      await refresh();
      element.dispatchEvent(new CustomEvent("conversation-changed", { detail: conversation.id }));
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  async function remove(conversation) {
    const confirmed = await modal(t("delete"),
      h("p", { text: t("confirmDelete", { title: conversation.title || t("untitled") }) }),
      [{ label: t("cancel") }, { label: t("delete"), primary: true, submit: true }]);
    if (!confirmed) return;
    try {
      await api.del(`/api/conversations/${conversation.id}`);
      if (conversation.id === activeId) navigate("/");
      await refresh();
    } catch (error) {
      toast(error.userMessage || error.message, "error");
    }
  }

  function setActive(id) {
    activeId = id;
    render();
  }

  return { element, refresh, setActive };
}

/** The snippet with its matches wrapped in <mark>, built as text nodes. */
function highlight(snippet, ranges) {
  const parts = [];
  let at = 0;
  for (const [start, end] of ranges || []) {
    if (start > at) parts.push(snippet.slice(at, start));
    parts.push(h("mark", { text: snippet.slice(start, end) }));
    at = end;
  }
  parts.push(snippet.slice(at));
  return parts;
}

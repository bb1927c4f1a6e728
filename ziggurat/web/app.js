// Start-up and the page shell. On load we try the refresh cookie for an access token
// (so a reload, or the return from single sign-on, keeps you signed in), then route.

import * as api from "./api.js";
import { h, clear, icon, iconButton, toast } from "./dom.js";
import { t, toggleLanguage } from "./i18n.js";
import { navigate, otherwise, resolve, route } from "./router.js";
import * as session from "./session.js";
import { applyTheme, theme, toggleTheme } from "./theme.js";
import { renderAdmin } from "./views/admin.js";
import { createChat } from "./views/chat.js";
import { renderLogin } from "./views/login.js";
import { createSidebar } from "./views/sidebar.js";

const root = document.getElementById("app");
let shell = null; // built once per sign-in and language

applyTheme();

function createModelPicker() {
  let models = [];
  let wanted = null;
  const select = h("select", { class: "model-picker", "aria-label": t("model"), title: t("model") });
  const element = h("label", { class: "model-wrap" }, select);
  const remembered = () => localStorage.getItem("ziggurat.model");

  function paint() {
    clear(select);
    const names = models.map((model) => model.id);
    if (wanted && !names.includes(wanted)) names.unshift(wanted);
    for (const name of names) {
      const model = models.find((m) => m.id === name);
      select.append(h("option", { value: name, text: model?.is_demo ? `${name} (${t("demoModel")})` : name }));
    }
    const choice = [wanted, remembered()].find((name) => name && names.includes(name)) || names[0];
    if (choice) select.value = choice;
  }

  return {
    element,
    async load() {
      try {
        models = (await api.get("/v1/models")).data;
      } catch (error) {
        toast(error.userMessage || error.message, "error");
      }
      paint();
    },
    select(name) { wanted = name; paint(); },
    value: () => select.value || null,
    onChange(listener) {
      select.addEventListener("change", () => { localStorage.setItem("ziggurat.model", select.value); listener(select.value); });
    },
  };
}

async function buildShell() {
  const me = await api.get("/api/auth/me");
  // `is_admin` where the server reports it; older servers are probed (a 403 for non-admins).
  const isAdmin = typeof me.is_admin === "boolean"
    ? me.is_admin : await api.get("/api/admin/roles").then(() => true, () => false);
  const models = createModelPicker();
  const banner = h("div", { class: "banner", role: "alert", hidden: true });
  const content = h("section", { class: "content" });
  const closeMenu = () => frame.classList.remove("menu-open");

  const footer = h("div", { class: "side-foot" },
    isAdmin ? h("a", { href: "/admin/users", "data-link": true, class: "side-link", onclick: closeMenu },
      icon("shield"), h("span", { text: t("admin") })) : null,
    h("div", { class: "me" }, h("span", { class: "avatar small", "aria-hidden": "true", text: me.email[0].toUpperCase() }),
      h("span", { class: "me-email", text: me.email, title: me.email }),
      iconButton("logout", t("signOut"), async () => { await session.logout(); })));

  const sidebar = createSidebar({ onNavigate: closeMenu, footer });
  const shellApi = { setBanner };
  const chat = createChat({ shell: shellApi, sidebar, models });
  models.onChange((name) => chat.changeModel(name));

  const topbar = h("header", { class: "topbar" },
    iconButton("menu", t("menu"), () => frame.classList.toggle("menu-open"), { class: "icon-btn menu-btn" }),
    models.element,
    h("span", { class: "spacer" }),
    iconButton("sliders", t("chatSettings"), () => chat.editSystemPrompt(), { class: "icon-btn chat-only" }),
    h("button", { type: "button", class: "btn ghost small lang", "aria-label": t("languageLabel"), text: t("language"),
      onclick: () => { toggleLanguage(); shell = null; start(); } }),
    iconButton(theme() === "dark" ? "sun" : "moon", t("theme"), (event) => {
      toggleTheme();
      event.currentTarget.replaceChildren(icon(theme() === "dark" ? "sun" : "moon"));
    }));

  const frame = h("div", { class: "shell" }, sidebar.element,
    h("div", { class: "scrim", onclick: closeMenu }),
    h("div", { class: "main" }, topbar, banner, content));

  function setBanner(text) {
    banner.hidden = !text;
    banner.textContent = text || "";
  }
  window.addEventListener("offline", () => setBanner(t("offline")));
  window.addEventListener("online", () => { setBanner(null); toast(t("reconnected")); });

  function showChat(conversationId) {
    frame.classList.remove("admin-mode");
    if (content.firstChild !== chat.element) clear(content).append(chat.element);
    sidebar.setActive(conversationId);
    if (chat.currentId() !== conversationId || !conversationId) chat.open(conversationId);
  }

  function showAdmin(tab) {
    frame.classList.add("admin-mode");
    sidebar.setActive(null);
    renderAdmin(content, tab);
  }

  await models.load();
  sidebar.refresh();
  return { frame, showChat, showAdmin };
}

async function start() {
  if (!session.isSignedIn()) {
    resolve();
    return;
  }
  if (!shell) {
    try {
      shell = await buildShell();
    } catch (error) {
      clear(root).append(h("p", { class: "form-error", text: error.userMessage || error.message }));
      return;
    }
    clear(root).append(shell.frame);
  }
  resolve();
}

function showLogin(mode) {
  if (session.isSignedIn()) { navigate("/", { replace: true }); return; }
  shell = null;
  renderLogin(root, { mode, onSignedIn: () => navigate("/", { replace: true }), rerender: () => showLogin(mode) });
}

function signedIn(handler) {
  return (params) => {
    if (!session.isSignedIn()) { navigate("/login", { replace: true }); return; }
    if (!shell) { start(); return; }
    handler(params);
  };
}

route("/login", () => showLogin("signin"));
route("/register", () => showLogin("register"));
route("/", signedIn(() => shell.showChat(null)));
route("/c/:id", signedIn(({ id }) => shell.showChat(id)));
route("/admin", signedIn(() => navigate("/admin/users", { replace: true })));
route("/admin/:tab", signedIn(({ tab }) => shell.showAdmin(tab)));
otherwise(() => navigate("/", { replace: true }));

session.onChange((signedIn) => {
  if (!signedIn) {
    shell = null;
    if (!["/login", "/register"].includes(location.pathname)) {
      navigate("/login", { replace: true });
    }
  }
});

await session.refresh();
start();

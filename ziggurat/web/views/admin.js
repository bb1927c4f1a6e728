// Administration: users (role, active), usage per day, the model registry, and the
// feedback review with its JSONL export. Every call needs the admin permission; the
// server checks it, this page only hides the link from others.

import * as api from "../api.js";
import { h, clear, formatTime, icon, toast } from "../dom.js";
import { language, t } from "../i18n.js";

const TABS = [["users", "users"], ["usage", "usage"], ["models", "models"], ["feedback", "feedback"]];

export function renderAdmin(root, tab) {
  const nav = h("nav", { class: "tabs", "aria-label": t("admin") }, TABS.map(([key, label]) =>
    h("a", { href: `/admin/${key}`, "data-link": true, class: key === tab ? "tab active" : "tab",
      "aria-current": key === tab ? "page" : null, text: t(label) })));
  const body = h("div", { class: "admin-body" });
  clear(root).append(h("div", { class: "admin" }, h("h1", { text: t("admin") }), nav, body));
  const view = { users, usage, models, feedback }[tab] || users;
  view(body).catch((error) => body.append(h("p", { class: "form-error", text: error.userMessage || error.message })));
}

function table(headers, rows) {
  if (!rows.length) return h("p", { class: "muted", text: t("nothingHere") });
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col", text })))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))))));
}

async function patchWith(path, changes) {
  try {
    await api.patch(path, changes);
    toast(t("saved"));
  } catch (error) {
    toast(error.userMessage || error.message, "error");
  }
}

async function users(body) {
  const roles = (await api.get("/api/admin/roles")).data.map((role) => role.name);
  const filter = h("input", { type: "search", placeholder: t("filterEmail"), "aria-label": t("filterEmail") });
  const results = h("div");
  let cursor = null;
  const more = h("button", { type: "button", class: "btn", text: t("loadMore"), hidden: true, onclick: () => load(false) });
  async function load(reset) {
    if (reset) { cursor = null; clear(results); }
    const page = await api.get(`/api/admin/users${api.query({ limit: 50, cursor, email: filter.value.trim() })}`);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    results.append(table([t("email"), t("role"), t("active"), t("created")], page.data.map((user) => [
      user.email,
      h("select", { "aria-label": `${t("role")} ${user.email}`,
        onchange: (event) => patchWith(`/api/admin/users/${user.id}`, { role: event.target.value }) },
      roles.map((role) => h("option", { value: role, text: role, selected: role === user.role }))),
      h("input", { type: "checkbox", checked: user.is_active, "aria-label": `${t("active")} ${user.email}`,
        onchange: (event) => patchWith(`/api/admin/users/${user.id}`, { is_active: event.target.checked }) }),
      formatTime(user.created_at, language()),
    ])));
  }
  let timer = null;
  filter.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(true), 300); });
  body.append(h("div", { class: "toolbar" }, filter), results, more);
  await load(true);
}

async function usage(body) {
  const today = new Date().toISOString().slice(0, 10);
  const monthAgo = new Date(Date.now() - 30 * 864e5).toISOString().slice(0, 10);
  const by = h("select", { "aria-label": t("usage") },
    h("option", { value: "user", text: t("byUser") }), h("option", { value: "model", text: t("byModel") }));
  const since = h("input", { type: "date", value: monthAgo, "aria-label": t("since") });
  const until = h("input", { type: "date", value: today, "aria-label": t("until") });
  const results = h("div");
  async function load() {
    const report = await api.get(`/api/admin/usage${api.query({ by: by.value, since: since.value, until: until.value })}`);
    const emails = report.by === "user" ? await emailsOf(report.data.map((row) => row.user_id)) : new Map();
    const totals = report.data.reduce((sum, row) => ({
      requests: sum.requests + row.requests, tokens: sum.tokens + row.total_tokens,
    }), { requests: 0, tokens: 0 });
    clear(results).append(
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("span", { text: t("requests") }), h("strong", { text: totals.requests.toLocaleString() })),
        h("div", { class: "stat" }, h("span", { text: t("total") }), h("strong", { text: totals.tokens.toLocaleString() }))),
      table([t("day"), report.by === "user" ? t("user") : t("model"), t("requests"), t("promptTokens"),
        t("completionTokens"), t("total")], report.data.map((row) => [
        row.day, (report.by === "user" ? emails.get(row.user_id) || row.user_id : row.model) || "—", row.requests,
        row.prompt_tokens, row.completion_tokens, row.total_tokens,
      ])));
  }
  const run = () => load().catch((error) => toast(error.userMessage || error.message, "error"));
  [by, since, until].forEach((control) => control.addEventListener("change", run));
  body.append(h("div", { class: "toolbar" }, by, since, until), results);
  await load();
}

const knownEmails = new Map();

/** Usage rows name users by id; people read emails. Unknown ids (deleted users) stay ids. */
async function emailsOf(ids) {
  const missing = [...new Set(ids.filter((id) => id && !knownEmails.has(id)))];
  await Promise.all(missing.map((id) => api.get(`/api/admin/users/${encodeURIComponent(id)}`)
    .then((user) => knownEmails.set(id, user.email), () => knownEmails.set(id, null))));
  return knownEmails;
}

async function models(body) {
  const entries = (await api.get("/api/admin/models")).data;
  body.append(table([t("name"), t("engine"), t("served"), t("allowedRoles"), t("enabled")], entries.map((entry) => {
    const roles = h("input", { type: "text", value: (entry.allowed_roles || []).join(", "),
      placeholder: t("everyone"), "aria-label": `${t("allowedRoles")} ${entry.name}` });
    roles.addEventListener("change", () => {
      const names = roles.value.split(",").map((s) => s.trim()).filter(Boolean);
      patchWith(`/api/admin/models/${entry.id}`, { allowed_roles: names.length ? names : null });
    });
    return [
      h("div", {}, h("strong", { text: entry.name }), entry.description ? h("div", { class: "muted small", text: entry.description }) : null),
      entry.engine || "—",
      entry.is_served ? "✓" : "—",
      roles,
      h("input", { type: "checkbox", checked: entry.enabled, "aria-label": `${t("enabled")} ${entry.name}`,
        onchange: (event) => patchWith(`/api/admin/models/${entry.id}`, { enabled: event.target.checked }) }),
    ];
  })));
}

async function feedback(body) {
  const thumb = h("select", { "aria-label": t("thumb") },
    h("option", { value: "", text: t("all") }), h("option", { value: "up", text: t("up") }),
    h("option", { value: "down", text: t("down") }));
  const corrected = h("input", { type: "checkbox", id: "fb-has-correction" });
  const results = h("div", { class: "feedback-list" });
  let cursor = null;
  const more = h("button", { type: "button", class: "btn", text: t("loadMore"), hidden: true, onclick: () => load(false) });
  const filters = () => ({ thumb: thumb.value, has_correction: corrected.checked ? "true" : "" });
  async function load(reset) {
    if (reset) { cursor = null; clear(results); }
    const page = await api.get(`/api/admin/feedback${api.query({ ...filters(), limit: 50, cursor })}`);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (reset && !page.data.length) results.append(h("p", { class: "muted", text: t("nothingHere") }));
    results.append(...page.data.map(card));
  }
  const card = (item) => h("article", { class: "feedback-card", "data-feedback-id": item.id },
    h("header", {},
      h("span", { class: `thumb-badge ${item.thumb || ""}`, title: item.thumb ? t(item.thumb) : "" },
        item.thumb ? icon(item.thumb) : "•"),
      h("span", { text: item.user_email }), h("span", { class: "muted", text: item.model || "" }),
      h("span", { class: "muted", text: formatTime(item.created_at, language()) })),
    field(t("question"), item.question), field(t("answer"), item.answer),
    field(t("comment"), item.comment), field(t("correction"), item.corrected_answer, "correction"));
  const exportButton = (format, label) => h("button", { type: "button", class: "btn", text: label,
    onclick: () => download(`/api/admin/feedback/export${api.query({ ...filters(), format })}`, `feedback-${format}.jsonl`) });
  [thumb, corrected].forEach((control) => control.addEventListener("change", () => load(true)));
  body.append(h("div", { class: "toolbar" }, thumb,
    h("label", { class: "check" }, corrected, t("withCorrection")),
    h("span", { class: "spacer" }),
    exportButton("sft", t("exportSft")), exportButton("preference", t("exportPreference"))), results, more);
  await load(true);
}

function field(label, text, kind = "") {
  if (!text) return null;
  return h("div", { class: `fb-field ${kind}` }, h("h4", { text: label }), h("p", { text }));
}

/** A download needs the bearer token, so it is fetched and handed to the browser as a blob. */
async function download(path, filename) {
  try {
    const response = await api.raw("GET", path);
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    toast(error.userMessage || error.message, "error");
  }
}

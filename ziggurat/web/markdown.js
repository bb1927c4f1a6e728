// Markdown to safe DOM. marked turns text into HTML; DOMPurify removes anything that
// could run (scripts, event handlers, javascript: URLs, styles) before it touches the
// page; then code blocks get highlighting and a copy button, and TeX math becomes
// MathML (math.js). Model output and user
// text only ever reach the page through here or as plain text.

import { marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight/core.min.js";
import bash from "./vendor/highlight/languages/bash.min.js";
import cpp from "./vendor/highlight/languages/cpp.min.js";
import css from "./vendor/highlight/languages/css.min.js";
import diff from "./vendor/highlight/languages/diff.min.js";
import go from "./vendor/highlight/languages/go.min.js";
import java from "./vendor/highlight/languages/java.min.js";
import javascript from "./vendor/highlight/languages/javascript.min.js";
import json from "./vendor/highlight/languages/json.min.js";
import markdown from "./vendor/highlight/languages/markdown.min.js";
import python from "./vendor/highlight/languages/python.min.js";
import rust from "./vendor/highlight/languages/rust.min.js";
import sql from "./vendor/highlight/languages/sql.min.js";
import typescript from "./vendor/highlight/languages/typescript.min.js";
import xml from "./vendor/highlight/languages/xml.min.js";
import yaml from "./vendor/highlight/languages/yaml.min.js";
import { h, icon, toast } from "./dom.js";
import { t } from "./i18n.js";
import { mathExtension, renderMath } from "./math.js";

const LANGUAGES = { bash, cpp, css, diff, go, java, javascript, json, markdown, python, rust, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);
hljs.configure({ ignoreUnescapedHTML: true });

marked.use({ gfm: true, breaks: false });
marked.use(mathExtension);

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style", "class", "id"],
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["data-lang", "data-math"],
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Sanitised markdown as a DocumentFragment (never a string, so nothing re-parses it). */
export function renderMarkdown(source) {
  const html = marked.parse(source || "", { async: false });
  const fragment = DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  fragment.querySelectorAll("pre > code").forEach(decorateCode);
  renderMath(fragment);
  fragment.querySelectorAll("table").forEach((table) => {
    table.replaceWith(h("div", { class: "table-wrap" }, table.cloneNode(true)));
  });
  return fragment;
}

function decorateCode(code) {
  const pre = code.parentElement;
  const raw = code.textContent.replace(/\n$/, "");
  const lang = detectLanguage(code.dataset.lang);
  code.removeAttribute("data-lang");
  if (lang && hljs.getLanguage(lang)) {
    const result = hljs.highlight(raw, { language: lang, ignoreIllegals: true });
    const safe = DOMPurify.sanitize(result.value, { ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"] });
    code.innerHTML = safe;
    code.className = `hljs language-${lang}`;
  }
  const copy = h("button", {
    type: "button", class: "copy-code", "aria-label": t("copyCode"), title: t("copyCode"),
    onclick: () => copyText(raw),
  }, icon("copy"), h("span", { text: t("copy") }));
  const header = h("div", { class: "code-head" }, h("span", { class: "code-lang", text: lang || "text" }), copy);
  const wrap = h("div", { class: "code-block" });
  pre.replaceWith(wrap);
  wrap.append(header, pre);
}

function detectLanguage(name) {
  const aliases = { js: "javascript", ts: "typescript", py: "python", sh: "bash", shell: "bash",
    html: "xml", yml: "yaml", "c++": "cpp", c: "cpp", md: "markdown", zsh: "bash", console: "bash" };
  const lower = (name || "").toLowerCase();
  return aliases[lower] || lower;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast(t("copied"));
  } catch {
    toast(t("copied"));
  }
}

// Keep the fence language through sanitising: DOMPurify drops `class`, so a custom renderer
// puts it in a data attribute we read back and then remove.
// Raw HTML in the source is shown as text, the way people wrote it, rather than
// interpreted: a model that writes `<img onerror=...>` shows exactly that.
const escapeHtml = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
  .replace(/"/g, "&quot;");

marked.use({
  renderer: {
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].replace(/[^\w+#.-]/g, "");
      return `<pre><code data-lang="${language}">${escapeHtml(text)}\n</code></pre>\n`;
    },
    html({ text }) {
      return escapeHtml(text);
    },
  },
});

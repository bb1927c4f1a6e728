// TeX math in answers: `$...$` inline and `$$...$$` on its own, drawn as MathML.
//
// KaTeX's usual HTML output places every glyph with `style="..."` attributes, which the page's
// CSP (`style-src 'self'`) refuses; its MathML output has no inline styles, and the browser draws
// MathML itself, so neither KaTeX's CSS nor its fonts are shipped. The markdown step only leaves a
// placeholder holding the TeX as text (so DOMPurify sees nothing but a span); KaTeX then builds
// the math as DOM nodes, never as an HTML string, with `trust: false` so `\href`, `\url` and
// `\htmlClass` cannot make links or attributes. Anything with an address is removed all the same.

import "./vendor/katex/katex.min.js"; // a UMD bundle: it defines `self.katex`

const katex = globalThis.katex;

// Inline: no space just inside the dollars and no digit right after the closing one, so prices
// ("$5 and $10") stay text, as in Pandoc.
const INLINE = /^\$(?!\s)((?:\\[\s\S]|[^\\$\n])+?)(?<!\s)\$(?!\d)/;
const INLINE_DISPLAY = /^\$\$(?!\$)((?:\\[\s\S]|[^\\$])+?)\$\$/;
const BLOCK = /^ {0,3}\$\$([\s\S]+?)\$\$[^\S\n]*(?:\n+|$)/;

const escapeText = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const placeholder = (tex, display, tag = "span") =>
  `<${tag} data-math="${display ? "display" : "inline"}">${escapeText(tex)}</${tag}>`;

/** A `marked.use()` extension that turns math into placeholders for `renderMath`. */
export const mathExtension = {
  extensions: [
    {
      name: "mathBlock",
      level: "block",
      start: (src) => src.match(/^ {0,3}\$\$/m)?.index,
      tokenizer(src) {
        const match = BLOCK.exec(src);
        if (match) return { type: "mathBlock", raw: match[0], text: match[1].trim() };
        return undefined;
      },
      renderer: (token) => placeholder(token.text, true, "div"),
    },
    {
      name: "mathInline",
      level: "inline",
      start: (src) => src.indexOf("$") >= 0 ? src.indexOf("$") : undefined,
      tokenizer(src) {
        const display = INLINE_DISPLAY.exec(src);
        if (display) return { type: "mathInline", raw: display[0], text: display[1].trim(), display: true };
        const match = INLINE.exec(src);
        if (match) return { type: "mathInline", raw: match[0], text: match[1], display: false };
        return undefined;
      },
      renderer: (token) => placeholder(token.text, token.display),
    },
  ],
};

/** Replaces every placeholder in `root` (already sanitised) with MathML. */
export function renderMath(root) {
  for (const node of root.querySelectorAll("[data-math]")) {
    const tex = node.textContent;
    const display = node.dataset.math === "display";
    node.removeAttribute("data-math");
    node.className = display ? "math-display" : "math-inline";
    if (!katex) continue; // leave the TeX readable
    try {
      katex.render(tex, node, { output: "mathml", displayMode: display, throwOnError: false, trust: false,
        maxSize: 20, maxExpand: 200, strict: "ignore" });
    } catch {
      node.textContent = tex;
    }
    for (const linked of node.querySelectorAll("a, [href], [src], [style]")) {
      if (linked.tagName === "A") linked.replaceWith(...linked.childNodes);
      else { linked.removeAttribute("href"); linked.removeAttribute("src"); linked.removeAttribute("style"); }
    }
  }
}

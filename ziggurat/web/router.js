// Client-side routes on the History API. The server answers index.html for every
// path without a file extension, so each of these URLs also works on reload.

const routes = [];
let fallback = null;

/** `pattern` like "/c/:id"; the handler receives the params object. */
export function route(pattern, handler) {
  const names = [];
  const regex = new RegExp(`^${pattern.replace(/:(\w+)/g, (_, name) => { names.push(name); return "([^/]+)"; })}/?$`);
  routes.push({ regex, names, handler });
}

export function otherwise(handler) { fallback = handler; }

export function navigate(path, { replace = false } = {}) {
  if (path === location.pathname + location.search) { resolve(); return; }
  history[replace ? "replaceState" : "pushState"]({}, "", path);
  resolve();
}

/** Change the address bar without re-rendering (a new chat that just got its id). */
export function setPath(path) {
  history.replaceState({}, "", path);
}

export function resolve() {
  const path = location.pathname;
  for (const { regex, names, handler } of routes) {
    const match = regex.exec(path);
    if (match) {
      const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(match[i + 1])]));
      return handler(params);
    }
  }
  return fallback?.();
}

window.addEventListener("popstate", resolve);

// Same-origin links marked `data-link` navigate in place.
document.addEventListener("click", (event) => {
  const link = event.target.closest?.("a[data-link]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});

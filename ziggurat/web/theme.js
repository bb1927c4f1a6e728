// Light and dark themes: the saved choice, else the system's. The whole palette is CSS
// variables keyed on <html data-theme>, so switching needs no reload.

const STORAGE_KEY = "ziggurat.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

export function theme() {
  return localStorage.getItem(STORAGE_KEY) || (media.matches ? "dark" : "light");
}

export function applyTheme() {
  document.documentElement.dataset.theme = theme();
}

export function toggleTheme() {
  localStorage.setItem(STORAGE_KEY, theme() === "dark" ? "light" : "dark");
  applyTheme();
}

media.addEventListener("change", applyTheme);

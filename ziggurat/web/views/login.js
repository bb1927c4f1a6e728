// Sign in and register on one card, plus the single sign-on button when the server
// has OIDC configured (`GET /api/auth/providers`).

import { h, clear, icon, iconButton } from "../dom.js";
import { t, toggleLanguage } from "../i18n.js";
import * as session from "../session.js";
import { theme, toggleTheme } from "../theme.js";

let providers = null;

// A failed single sign-on comes back as `/login?error=<code>` (a fixed set of codes, never server
// text). The code is read once and taken out of the address bar, so a reload does not repeat it;
// the message stays until the next attempt.
const SSO_ERRORS = {
  sso_denied: "ssoDenied", sso_expired: "ssoExpired", sso_not_allowed: "ssoNotAllowed",
  sso_unavailable: "ssoUnavailable", sso_failed: "ssoFailed",
};
let ssoError = null;

function takeSsoError() {
  const params = new URLSearchParams(location.search);
  const code = params.get("error");
  if (code === null) return;
  ssoError = SSO_ERRORS[code] || "ssoFailed";
  params.delete("error");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + (rest ? `?${rest}` : ""));
}

async function loadProviders() {
  if (providers) return providers;
  try {
    const response = await fetch("/api/auth/providers");
    providers = response.ok ? await response.json() : { registration_open: true, oidc: null };
  } catch {
    providers = { registration_open: true, oidc: null };
  }
  return providers;
}

export async function renderLogin(root, { mode = "signin", onSignedIn, rerender }) {
  takeSsoError();
  const info = await loadProviders();
  const registering = mode === "register";
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const ssoNotice = ssoError ? h("p", { class: "form-error sso-error", role: "alert", text: t(ssoError) }) : null;
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true, id: "login-email" });
  const password = h("input", {
    type: "password", name: "password", required: true, minlength: registering ? 8 : null, id: "login-password",
    autocomplete: registering ? "new-password" : "current-password",
  });
  const invitation = h("input", { type: "text", name: "invitation", id: "login-invitation", autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "btn primary wide", text: registering ? t("register") : t("signIn") });

  const form = h("form", { class: "login-form", novalidate: true },
    h("label", { for: "login-email", text: t("email") }), email,
    h("label", { for: "login-password", text: t("password") }), password,
    registering ? [h("label", { for: "login-invitation", text: t("invitation") }), invitation] : null,
    error, submit);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    ssoError = null;
    ssoNotice?.remove();
    submit.disabled = true;
    try {
      if (registering) await session.register(email.value.trim(), password.value, invitation.value.trim());
      else await session.login(email.value.trim(), password.value);
      onSignedIn();
    } catch (failure) {
      error.textContent = failure.status === 429 && failure.retryAfter
        ? t("retryIn", { s: failure.retryAfter }) : failure.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });

  const oidc = info.oidc ? [
    h("a", { class: "btn wide sso", href: session.oidcLoginUrl("/"), text: t("signInWith", { name: info.oidc.name }) }),
    h("div", { class: "divider" }, h("span", { text: t("or") })),
  ] : null;

  const switchMode = registering
    ? h("p", { class: "switch" }, t("haveAccount"), " ",
      h("a", { href: "/login", "data-link": true, text: t("signIn") }))
    : info.registration_open
      ? h("p", { class: "switch" }, t("noAccount"), " ",
        h("a", { href: "/register", "data-link": true, text: t("register") }))
      : h("p", { class: "switch muted", text: t("registrationClosed") });

  const tools = h("div", { class: "login-tools" },
    h("button", { type: "button", class: "btn ghost small", "aria-label": t("languageLabel"), text: t("language"),
      onclick: () => { toggleLanguage(); rerender(); } }),
    iconButton(theme() === "dark" ? "sun" : "moon", t("theme"), (event) => {
      toggleTheme();
      event.currentTarget.replaceChildren(icon(theme() === "dark" ? "sun" : "moon"));
    }));

  clear(root).append(h("main", { class: "login-page" },
    tools,
    h("section", { class: "login-card" },
      h("div", { class: "brand" }, h("img", { src: document.querySelector("link[rel=icon]").href, alt: "", class: "logo" }),
        h("span", { text: t("appName") })),
      h("h1", { text: registering ? t("registerTitle") : t("signInTitle") }),
      ssoNotice, oidc, form, switchMode)));
  email.focus();
}

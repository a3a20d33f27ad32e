// Sign-in: an API key, checked against /api/me, kept in this tab's sessionStorage.

import { ApiError, get, rememberKey } from "../api.js";
import { h, replace } from "../dom.js";

/** Show the sign-in screen in `root`; `onSignedIn(profile)` runs once a key is accepted. */
export function renderSignIn(root, reason, onSignedIn) {
  const input = h("input", { id: "api-key", type: "password", name: "api-key", autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "api-key-help api-key-error" });
  const error = h("p", { id: "api-key-error", class: "field-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "form signin-form", novalidate: true, "aria-labelledby": "signin-title" },
    h("div", { class: "field" },
      h("label", { for: "api-key", class: "label" }, "API key"),
      input,
      h("p", { id: "api-key-help", class: "help" },
        "Create one on the server with ", h("code", {}, "tbd-agents keys create --admin"),
        ". It is kept only in this browser tab and sent as a bearer token."),
      error),
    h("div", { class: "actions" }, submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Paste your API key.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const profile = await get("/api/me", undefined, { key });
      rememberKey(key);
      await onSignedIn(profile);
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401
        ? "This key was not accepted (unknown, revoked or expired). Check it and try again."
        : `Could not sign in: ${e.message}`;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });

  replace(root, h("main", { id: "main", class: "signin", tabindex: "-1" },
    h("div", { class: "card signin-card" },
      h("h1", { id: "signin-title" }, "Sign in to TBD Agents"),
      reason ? h("p", { class: "notice notice-info", role: "status" }, reason) : null,
      form)));
  document.title = "Sign in · TBD Agents";
  input.focus();
}

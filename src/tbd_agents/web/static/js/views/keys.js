// API keys: list, create (the key is shown once, in a dialog), revoke.

import { del, get, getPage, post } from "../api.js";
import { confirmDialog, dialog, h, notify, replace, when } from "../dom.js";
import { buildForm } from "../forms.js";

function keyRow(key, onRevoke) {
  const state = key.revoked_at ? "revoked" : key.expires_at && new Date(key.expires_at) < new Date() ? "expired" : "active";
  return h("tr", {},
    h("td", {}, key.name || h("span", { class: "muted" }, "(unnamed)")),
    h("td", {}, h("code", {}, `${key.prefix}…`)),
    h("td", {}, key.owner),
    h("td", {}, key.scope.replace("_", " ")),
    h("td", {}, h("span", { class: ["badge", `status-${state}`] }, state)),
    h("td", {}, when(key.last_used_at)),
    h("td", {}, when(key.expires_at)),
    h("td", { class: "row-actions" }, state === "active"
      ? h("button", { type: "button", class: "small danger", "aria-label": `Revoke ${key.name || key.prefix}`, onClick: () => onRevoke(key) }, "Revoke") : null));
}

async function showOnce(created) {
  await dialog("Your new API key", (close) => {
    const field = h("input", { type: "text", readonly: true, value: created.key, class: "code", "aria-label": "New API key", id: "new-key" });
    return h("div", {},
      h("p", {}, "Copy it now: it is shown this once and cannot be read again."),
      field,
      h("div", { class: "actions" },
        h("button", { type: "button", onClick: async () => { field.select(); try { await navigator.clipboard.writeText(created.key); notify("Copied."); } catch { notify("Select the key and copy it."); } } }, "Copy"),
        h("button", { type: "button", class: "primary", onClick: () => { field.value = ""; close(); } }, "Done")));
  });
}

/** `#/keys`. */
export async function renderKeys(ctx) {
  const page = await getPage("/api/keys", { limit: 200 });
  if (!ctx.isCurrent()) return;
  const isAdmin = ctx.me.scope === "admin";
  const fields = [
    { name: "name", label: "Name", kind: "text", help: "What the key is for, e.g. “laptop” or “CI”." },
    { name: "scope", label: "Scope", kind: "select", default: "user", options: [
      { value: "read_only", label: "read only" }, { value: "user", label: "user (read and change own records)" },
      ...(isAdmin ? [{ value: "admin", label: "admin (everything)" }] : [])] },
    ...(isAdmin ? [{ name: "owner", label: "Owner", kind: "text", nullable: true, help: "Default: you." }] : []),
    { name: "expires_at", label: "Expires at", kind: "datetime", nullable: true },
  ];
  const form = buildForm({
    fields,
    submitLabel: "Create key",
    onSubmit: async (values) => {
      const created = await post("/api/keys", values);
      await showOnce(created);
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    },
  });
  const revoke = async (key) => {
    if (!(await confirmDialog("Revoke key", h("p", {}, `Revoke the key ${key.prefix}… (${key.name || "unnamed"})? Anything using it stops working.`), "Revoke", true))) return;
    await del(`/api/keys/${encodeURIComponent(key.id)}`);
    notify("Key revoked.", "success");
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  };
  replace(ctx.main,
    h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Keys let programs and people call the API. Only a digest is stored: a key is shown once, when it is created."),
    h("div", { class: "table-wrap" }, h("table", { class: "records" },
      h("caption", { class: "visually-hidden" }, "API keys"),
      h("thead", {}, h("tr", {}, ["Name", "Prefix", "Owner", "Scope", "State", "Last used", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, page.items.map((k) => keyRow(k, revoke))))),
    h("section", { class: "card", "aria-labelledby": "newkey" }, h("h2", { id: "newkey" }, "Create a key"), form.element));
}

// Form building: one widget per field kind, values in and out, API errors next to their field.
//
// A field spec: { name, label, kind, required, help, placeholder, options, rows, min, max, step,
//   nullable, virtual (helps the form, never sent), showIf(values) }. Kinds: text, textarea, code, number, integer,
//   checkbox, select, multi, tags, lines, json, kv, secret, datetime, model.

import { ApiError } from "./api.js";
import { append, h, uid } from "./dom.js";

function inputId(name) {
  return uid(`f-${name.replace(/[^\w-]/g, "")}`);
}

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

class FieldValueError extends Error {}

/** Widgets: each returns { control (focusable), node, get(), set(v) }. */
const WIDGETS = {
  text(spec, id) {
    const input = h("input", { id, type: spec.inputType || "text", name: spec.name, placeholder: spec.placeholder, autocomplete: "off", spellcheck: "false" });
    return { control: input, node: input, get: () => (input.value.trim() === "" && spec.nullable ? null : input.value), set: (v) => { input.value = v ?? ""; } };
  },
  textarea(spec, id) {
    const area = h("textarea", { id, name: spec.name, rows: spec.rows || 4, placeholder: spec.placeholder });
    return { control: area, node: area, get: () => area.value, set: (v) => { area.value = v ?? ""; } };
  },
  code(spec, id) {
    const w = WIDGETS.textarea({ ...spec, rows: spec.rows || 12 }, id);
    w.control.classList.add("code");
    w.control.spellcheck = false;
    w.control.addEventListener("keydown", (e) => {
      // Tab indents inside the editor; Escape then Tab leaves it (keyboard users are not trapped).
      if (e.key === "Tab" && !e.shiftKey && !w.control.dataset.escaped) {
        e.preventDefault();
        const { selectionStart: s, selectionEnd: end, value } = w.control;
        w.control.value = `${value.slice(0, s)}    ${value.slice(end)}`;
        w.control.selectionStart = w.control.selectionEnd = s + 4;
      } else if (e.key === "Escape") {
        w.control.dataset.escaped = "1";
      } else {
        delete w.control.dataset.escaped;
      }
    });
    return w;
  },
  secret(spec, id) {
    const input = h("input", { id, type: "password", name: spec.name, autocomplete: "new-password", spellcheck: "false", placeholder: spec.placeholder });
    // Never filled from a record: the API never returns secret values.
    return { control: input, node: input, get: () => input.value, set: () => { input.value = ""; } };
  },
  number(spec, id, integer = false) {
    const input = h("input", { id, type: "number", name: spec.name, min: spec.min, max: spec.max, step: spec.step || (integer ? 1 : "any"), inputmode: integer ? "numeric" : "decimal" });
    return {
      control: input,
      node: input,
      get: () => {
        if (input.value.trim() === "") {
          if (spec.nullable) return null;
          throw new FieldValueError("Enter a number.");
        }
        const n = Number(input.value);
        if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new FieldValueError(integer ? "Enter a whole number." : "Enter a number.");
        return n;
      },
      set: (v) => { input.value = v === null || v === undefined ? "" : String(v); },
    };
  },
  integer(spec, id) {
    return WIDGETS.number(spec, id, true);
  },
  checkbox(spec, id) {
    const input = h("input", { id, type: "checkbox", name: spec.name });
    return { control: input, node: input, get: () => input.checked, set: (v) => { input.checked = Boolean(v); } };
  },
  datetime(spec, id) {
    const input = h("input", { id, type: "datetime-local", name: spec.name });
    return {
      control: input,
      node: input,
      get: () => (input.value ? new Date(input.value).toISOString() : null),
      set: (v) => { input.value = toLocalInput(v); },
    };
  },
  select(spec, id) {
    const select = h("select", { id, name: spec.name });
    let wanted = spec.default ?? "";
    const fill = (options) => {
      const opts = spec.nullable ? [{ value: "", label: spec.noneLabel || "— none —" }, ...options] : options;
      select.replaceChildren(...opts.map((o) => h("option", { value: o.value }, o.label ?? o.value)));
      select.value = wanted ?? "";
    };
    const w = {
      control: select,
      node: select,
      get: () => (select.value === "" && spec.nullable ? null : select.value),
      set: (v) => { wanted = v ?? ""; select.value = wanted; },
      ready: Promise.resolve(typeof spec.options === "function" ? spec.options() : spec.options || []).then((opts) => {
        w.options = opts;
        fill(opts);
      }),
    };
    return w;
  },
  model(spec, id) {
    const listId = uid("models");
    const input = h("input", { id, type: "text", name: spec.name, list: listId, placeholder: spec.placeholder, autocomplete: "off" });
    const datalist = h("datalist", { id: listId });
    const w = {
      control: input,
      node: h("div", {}, input, datalist),
      get: () => (input.value.trim() === "" ? null : input.value.trim()),
      set: (v) => { input.value = v ?? ""; },
      setSuggestions: (names) => datalist.replaceChildren(...names.map((n) => h("option", { value: n }))),
    };
    return w;
  },
  multi(spec, id) {
    const filterId = uid("filter");
    const filter = h("input", { id: filterId, type: "search", class: "picker-filter", placeholder: `Filter ${spec.label.toLowerCase()}`, "aria-label": `Filter ${spec.label}` });
    const list = h("ul", { class: "picker-list", role: "list" });
    const box = h("fieldset", { class: "picker", id }, h("legend", { class: "visually-hidden" }, spec.label), filter, list);
    let selected = new Set();
    let options = [];
    const render = () => {
      const q = filter.value.trim().toLowerCase();
      const shown = options.filter((o) => !q || `${o.label} ${o.hint || ""}`.toLowerCase().includes(q));
      if (!options.length) {
        list.replaceChildren(h("li", { class: "muted" }, spec.emptyText || "Nothing to choose yet."));
        return;
      }
      list.replaceChildren(...shown.map((o) => {
        const cid = uid("opt");
        const cb = h("input", { type: "checkbox", id: cid, value: o.value, checked: selected.has(o.value), onChange: (e) => { if (e.target.checked) selected.add(o.value); else selected.delete(o.value); box.dispatchEvent(new Event("change", { bubbles: true })); } });
        if (o.hint) cb.setAttribute("aria-describedby", `${cid}-hint`);
        return h("li", {}, cb, h("label", { for: cid }, o.label), o.hint ? h("span", { class: "muted small", id: `${cid}-hint` }, o.hint) : null);
      }));
    };
    filter.addEventListener("input", render);
    const w = {
      control: filter,
      node: box,
      get: () => options.filter((o) => selected.has(o.value)).map((o) => o.value).concat([...selected].filter((v) => !options.some((o) => o.value === v))),
      set: (v) => { selected = new Set(v || []); render(); },
      ready: Promise.resolve(typeof spec.options === "function" ? spec.options() : spec.options || []).then((opts) => { options = opts; render(); }),
    };
    return w;
  },
  tags(spec, id) {
    const input = h("input", { id, type: "text", name: spec.name, placeholder: spec.placeholder || "comma, separated", autocomplete: "off" });
    return {
      control: input,
      node: input,
      get: () => input.value.split(",").map((t) => t.trim()).filter(Boolean),
      set: (v) => { input.value = (v || []).join(", "); },
    };
  },
  lines(spec, id) {
    const area = h("textarea", { id, name: spec.name, rows: spec.rows || 3, placeholder: spec.placeholder || "one per line", class: "code" });
    return {
      control: area,
      node: area,
      get: () => area.value.split("\n").map((t) => t.trim()).filter(Boolean),
      set: (v) => { area.value = (v || []).join("\n"); },
    };
  },
  json(spec, id) {
    const area = h("textarea", { id, name: spec.name, rows: spec.rows || 5, class: "code", spellcheck: "false", placeholder: spec.placeholder || "{}" });
    return {
      control: area,
      node: area,
      get: () => {
        const text = area.value.trim();
        if (!text) return spec.emptyValue !== undefined ? structuredClone(spec.emptyValue) : {};
        try {
          return JSON.parse(text);
        } catch (e) {
          throw new FieldValueError(`Not valid JSON: ${e.message}`);
        }
      },
      set: (v) => { area.value = v === undefined || v === null ? "" : JSON.stringify(v, null, 2); },
    };
  },
  kv(spec, id) {
    const area = h("textarea", { id, name: spec.name, rows: spec.rows || 3, class: "code", spellcheck: "false", placeholder: spec.placeholder || "NAME=value (one per line)" });
    return {
      control: area,
      node: area,
      get: () => {
        const out = {};
        for (const [n, raw] of area.value.split("\n").entries()) {
          const line = raw.trim();
          if (!line) continue;
          const eq = line.indexOf("=");
          if (eq <= 0) throw new FieldValueError(`Line ${n + 1}: write NAME=value.`);
          out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
        }
        return out;
      },
      set: (v) => { area.value = Object.entries(v || {}).map(([k, val]) => `${k}=${val}`).join("\n"); },
    };
  },
};

/**
 * Build a form for `fields`, filled from `record` (or the fields' defaults). `onSubmit(values)`
 * may throw an ApiError: its field errors are shown next to their fields, the rest on top.
 * Returns { element, values(), set(name, v), widget(name), showErrors(err), ready }.
 */
export function buildForm({ fields, record = null, submitLabel = "Save", onSubmit, onCancel, extraActions = [], labelledBy }) {
  const summary = h("div", { class: "form-errors", role: "alert", tabindex: "-1", hidden: true });
  const form = h("form", { class: "form", novalidate: true, "aria-labelledby": labelledBy });
  const widgets = new Map();
  const rows = new Map();
  const errorNodes = new Map();
  append(form, [summary]);
  for (const spec of fields) {
    const id = inputId(spec.name);
    const widget = (WIDGETS[spec.kind || "text"] || WIDGETS.text)(spec, id);
    const errId = `${id}-err`;
    const helpId = `${id}-help`;
    const err = h("p", { class: "field-error", id: errId, hidden: true });
    const help = spec.help ? h("p", { class: "help", id: helpId }, spec.help) : null;
    widget.control.setAttribute("aria-describedby", [help && helpId].filter(Boolean).join(" ") || errId);
    if (spec.required) widget.control.setAttribute("aria-required", "true");
    const isCheck = spec.kind === "checkbox";
    const label = spec.kind === "multi"
      ? h("span", { class: "label", id: `${id}-label` }, spec.label)
      : h("label", { for: id, class: "label" }, spec.label);
    // The required mark sits outside the label, so the field's name stays exactly its label.
    const star = spec.required ? h("span", { class: "req", "aria-hidden": "true", title: "required" }, "*") : null;
    if (spec.kind === "multi") widget.node.setAttribute("aria-labelledby", `${id}-label`);
    const row = h("div", { class: ["field", isCheck && "field-check", `field-${spec.name}`], dataset: { field: spec.name } },
      isCheck ? [widget.node, label] : [h("div", { class: "label-row" }, label, star), widget.node], help, err);
    widgets.set(spec.name, widget);
    rows.set(spec.name, row);
    errorNodes.set(spec.name, err);
    const initial = record && record[spec.name] !== undefined ? record[spec.name] : spec.default;
    if (initial !== undefined) widget.set(initial);
    form.append(row);
  }
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  form.append(h("div", { class: "actions" }, submit,
    onCancel ? h("button", { type: "button", onClick: onCancel }, "Cancel") : null, ...extraActions));

  const clearErrors = () => {
    summary.hidden = true;
    summary.replaceChildren();
    for (const [name, node] of errorNodes) {
      node.hidden = true;
      node.textContent = "";
      const control = widgets.get(name).control;
      control.removeAttribute("aria-invalid");
      const help = control.getAttribute("aria-describedby") || "";
      control.setAttribute("aria-describedby", help.split(" ").filter((x) => !x.endsWith("-err")).join(" ") || node.id);
    }
  };

  const setFieldError = (name, messages) => {
    const node = errorNodes.get(name);
    const control = widgets.get(name).control;
    node.textContent = messages.join(" ");
    node.hidden = false;
    control.setAttribute("aria-invalid", "true");
    const described = new Set((control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
    described.add(node.id);
    control.setAttribute("aria-describedby", [...described].join(" "));
  };

  const visible = (spec, values) => !spec.showIf || spec.showIf(values);

  const rawValues = () => {
    const out = {};
    for (const spec of fields) {
      try { out[spec.name] = widgets.get(spec.name).get(); } catch { out[spec.name] = undefined; }
    }
    return out;
  };

  const refreshVisibility = () => {
    const values = rawValues();
    for (const spec of fields) rows.get(spec.name).hidden = !visible(spec, values);
  };
  form.addEventListener("change", refreshVisibility);
  form.addEventListener("input", refreshVisibility);

  const values = () => {
    const out = {};
    const problems = new Map();
    const raw = rawValues();
    for (const spec of fields) {
      if (!visible(spec, raw)) continue;
      try {
        const v = widgets.get(spec.name).get();
        if (spec.required && (v === "" || v === null || (Array.isArray(v) && !v.length))) throw new FieldValueError("Required.");
        out[spec.name] = v; // virtual fields too: the caller drops them before sending
      } catch (e) {
        if (!(e instanceof FieldValueError)) throw e;
        problems.set(spec.name, [e.message]);
      }
    }
    return { values: out, problems };
  };

  const showErrors = (error) => {
    clearErrors();
    const byField = error instanceof ApiError ? error.fieldErrors() : error instanceof Map ? error : new Map();
    const unplaced = [];
    for (const [name, messages] of byField) {
      if (widgets.has(name) && !rows.get(name).hidden) setFieldError(name, messages);
      else unplaced.push(`${name}: ${messages.join(" ")}`);
    }
    // Focus the first field in the form's order that has an error.
    const firstSpec = fields.find((f) => byField.has(f.name) && !rows.get(f.name).hidden);
    const first = firstSpec ? widgets.get(firstSpec.name).control : null;
    const headline = error instanceof ApiError ? error.message : byField.size ? "Some fields need a fix." : String(error.message || error);
    summary.replaceChildren(h("p", {}, headline));
    if (unplaced.length) summary.append(h("ul", {}, unplaced.map((u) => h("li", {}, u))));
    summary.hidden = false;
    (first || summary).focus();
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const { values: vals, problems } = values();
    if (problems.size) { showErrors(problems); return; }
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await onSubmit(vals);
    } catch (e) {
      showErrors(e);
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  let initial = {};
  const ready = Promise.all([...widgets.values()].map((w) => w.ready).filter(Boolean)).then(() => {
    if (record) for (const spec of fields) if (record[spec.name] !== undefined) widgets.get(spec.name).set(record[spec.name]);
    refreshVisibility();
    initial = rawValues();
  });
  /** The subset of `vals` that differs from what the form showed when it was filled. */
  const changed = (vals) => Object.fromEntries(Object.entries(vals).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(initial[k])));
  /** Remember the current values as the saved state (after a successful save). */
  const markSaved = () => { initial = rawValues(); };
  refreshVisibility();
  return {
    element: form,
    values,
    widget: (name) => widgets.get(name),
    set: (name, v) => { widgets.get(name).set(v); refreshVisibility(); },
    showErrors,
    clearErrors,
    changed,
    markSaved,
    ready,
  };
}

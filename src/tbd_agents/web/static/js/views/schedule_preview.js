// "Next runs" under the schedule form: the next fire times of what the form says now, before it
// is saved. Refreshed (debounced) when a timing field changes; the API's error is shown under the
// field it names.

import { ApiError, post } from "../api.js";
import { append, h, replace } from "../dom.js";

const PREVIEW = "/api/scheduled-agents/preview";
const TIMING = ["mode", "interval_value", "interval_unit", "cron_expression", "timezone", "start_at", "end_at"];
const DELAY_MS = 400;

const localTime = (d) => d.toLocaleString(undefined, { weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
const utcTime = (d) => `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;

/** The schedule body the form describes, or a message saying what to fill in first. */
function timing(form) {
  const read = (name) => form.widget(name).get();
  let body;
  try {
    body = {
      interval_value: read("interval_value"),
      interval_unit: read("interval_unit"),
      cron_expression: read("cron_expression"),
      timezone: read("timezone"),
      start_at: read("start_at"),
      end_at: read("end_at"),
      count: 5,
    };
  } catch (e) {
    return { problem: `Fix the form to see the next runs: ${e.message}` };
  }
  if (read("mode") === "interval") body.cron_expression = null;
  else if (!body.cron_expression) return { problem: "Enter a cron expression to see the next runs." };
  return { body };
}

/** Add the "Next runs" card for `form` to `box`; it follows the form's timing fields. */
export function schedulePreviewPanel(form, box) {
  const out = h("div", { role: "status", "aria-live": "polite", class: "next-runs" });
  append(box, [h("section", { class: "card", "aria-labelledby": "sched-next" }, h("h2", { id: "sched-next" }, "Next runs"), out)]);
  const fieldNotes = new Map();
  const clearNotes = () => { for (const note of fieldNotes.values()) note.remove(); fieldNotes.clear(); };
  const noteUnder = (name, message) => {
    const row = form.widget(name)?.control.closest(".field");
    if (!row || row.hidden) return false;
    const note = h("p", { class: "field-error preview-error", role: "alert" }, message);
    row.append(note);
    fieldNotes.set(name, note);
    return true;
  };
  let timer = null;
  let generation = 0;
  const refresh = async () => {
    const mine = ++generation;
    const { body, problem } = timing(form);
    clearNotes();
    if (problem) { replace(out, h("p", { class: "muted" }, problem)); return; }
    try {
      const res = await post(PREVIEW, body);
      if (mine !== generation) return; // a newer edit is on its way
      if (!res.occurrences.length) { replace(out, h("p", { class: "muted" }, "No run left: the schedule has ended.")); return; }
      const items = res.occurrences.map((iso) => {
        const d = new Date(iso);
        return h("li", {}, h("time", { datetime: iso }, localTime(d)), h("span", { class: "muted small" }, ` · ${utcTime(d)}`));
      });
      const note = res.occurrences.length < body.count ? h("p", { class: "muted small" }, "The schedule ends after these.") : null;
      replace(out, h("ol", { class: "next-runs-list" }, items), note);
    } catch (e) {
      if (mine !== generation) return;
      const field = e instanceof ApiError ? e.details.field || [...e.fieldErrors().keys()][0] : null;
      const placed = field ? noteUnder(field, e.message) : false;
      replace(out, h("p", { class: "error" }, placed ? `Cannot preview: see ${field.replace(/_/g, " ")}.` : e.message));
    }
  };
  const schedule = (event) => {
    const row = event.target.closest?.(".field");
    if (row && !TIMING.includes(row.dataset.field)) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, DELAY_MS);
  };
  form.element.addEventListener("input", schedule);
  form.element.addEventListener("change", schedule);
  return refresh();
}

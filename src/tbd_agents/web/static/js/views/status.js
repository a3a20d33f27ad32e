// Status: readiness of the server's dependencies (/health/ready) and who is signed in.

import { h, replace } from "../dom.js";

/** `#/status`. */
export async function renderStatus(ctx) {
  // /health/ready answers 503 with the same body when a dependency is down.
  const response = await fetch("/health/ready", { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!ctx.isCurrent()) return;
  const ok = body.status === "ok";
  replace(ctx.main,
    h("h1", {}, "Status"),
    h("p", { class: ["notice", ok ? "notice-success" : "notice-error"], role: "status" },
      ok ? "Everything is ready." : "Something is not ready: see the failing check below."),
    h("div", { class: "table-wrap" }, h("table", { class: "records checks" },
      h("caption", { class: "visually-hidden" }, "Readiness checks"),
      h("thead", {}, h("tr", {}, ["Check", "State", "Latency", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, body.checks.map((c) => h("tr", {},
        h("th", { scope: "row" }, c.name.replace(/_/g, " ")),
        h("td", {}, h("span", { class: ["badge", c.ok ? "status-completed" : "status-failed"] }, c.ok ? "ok" : "failing")),
        h("td", {}, `${c.latency_ms.toFixed(1)} ms`),
        h("td", {}, c.detail || "—")))))),
    h("h2", {}, "You"),
    h("p", {}, `Signed in as ${ctx.me.identity}, scope ${ctx.me.scope.replace("_", " ")} (via ${ctx.me.via}).`),
    h("p", {}, h("a", { href: "/docs" }, "API reference (OpenAPI)")));
}

// The only way the dashboard talks to the server: the public API with the signed-in key.

const KEY_NAME = "tbd-agents.api-key";

/** The signed-in API key (kept for this browser tab's session only), or null. */
export function currentKey() {
  return window.sessionStorage.getItem(KEY_NAME);
}

export function rememberKey(key) {
  window.sessionStorage.setItem(KEY_NAME, key);
}

/** Forget the key and tell the app (it shows the sign-in screen). */
export function forgetKey(reason = "") {
  window.sessionStorage.removeItem(KEY_NAME);
  forgetOpenapi();
  window.dispatchEvent(new CustomEvent("tbd:signed-out", { detail: { reason } }));
}

/** An API answer that is not a success, in the API's one error shape. */
export class ApiError extends Error {
  /**
   * `message` is for people (what happened and what to do); `technical` is the request and the
   * server's own words, for a "Details" disclosure or a bug report.
   */
  constructor(status, code, message, details = {}, technical = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || {};
    this.technical = technical || `${status} ${code}: ${message}`;
  }

  /**
   * The errors that name a body field, as Map(field -> [messages]). `loc` paths look like
   * ["body", "name"] or ["body", "connection_config", "command"]; the first element after
   * "body" is the form field, the rest of the path is said in the message.
   */
  fieldErrors() {
    const out = new Map();
    for (const err of this.details.errors || []) {
      const loc = (err.loc || []).map(String);
      if (loc[0] !== "body" || loc.length < 2) continue;
      const field = loc[1];
      const rest = loc.slice(2).join(".");
      const msg = rest ? `${rest}: ${err.msg}` : err.msg;
      if (!out.has(field)) out.set(field, []);
      out.get(field).push(msg);
    }
    return out;
  }
}

/** Raised (without any request) when there is no key to send. */
export class NotSignedIn extends Error {
  constructor() {
    super("Sign in with an API key first.");
    this.name = "NotSignedIn";
  }
}

function authHeaders(key, extra = {}) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

/** `path` with `query` (arrays repeat the parameter; empty values are left out). */
export function buildUrl(path, query) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => url.searchParams.append(name, v));
    else url.searchParams.set(name, String(value));
  }
  return url.pathname + url.search;
}

/** What the records at an API path are called, for "This agent no longer exists". */
const THING = {
  "chat/sessions": "chat session",
  "custom-tools": "custom tool",
  "knowledge-items": "document",
  "knowledge-sources": "knowledge source",
  keys: "API key",
  mcps: "MCP server",
  memories: "memory",
  "scheduled-agents": "schedule",
  tasks: "run",
};

function thingAt(path) {
  const parts = path.split("?")[0].replace(/^\/api\//, "").split("/").filter(Boolean);
  const two = parts.slice(0, 2).join("/");
  if (THING[two]) return { thing: THING[two], id: parts[2] ? decodeURIComponent(parts[2]) : null };
  const first = parts[0] || "record";
  return { thing: THING[first] || first.replace(/-/g, " ").replace(/s$/, ""), id: parts[1] ? decodeURIComponent(parts[1]) : null };
}

/** The server's words as a sentence: capital first letter, a final full stop. */
function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const first = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

function bytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(n % (1024 * 1024) ? 1 : 0)} MB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KB`;
  return `${n} bytes`;
}

/** Validation errors as "field: message" (the path after "body"/"query"), or "". */
function fieldProblems(details) {
  const lines = (details.errors || []).map((err) => {
    const loc = (err.loc || []).map(String).filter((p, i) => !(i === 0 && ["body", "query", "path"].includes(p)));
    return loc.length ? `${loc.join(".").replace(/_/g, " ")}: ${err.msg}` : err.msg;
  });
  return lines.join("; ");
}

/**
 * What a failed request means for the person using the dashboard, and what to do about it, from
 * its status (0: no answer at all), the API's error code, message and details.
 */
export function friendlyMessage(status, code, serverMessage, details = {}, method = "GET", path = "") {
  const { thing, id } = thingAt(path);
  if (status === 0) return "Can't reach the server. Check it is running, then retry.";
  if (status === 401) return "Your API key was refused (revoked or expired). Sign in again.";
  if (status === 403) return `You are not allowed to do this with your key${serverMessage ? ` (${serverMessage.replace(/\.$/, "")})` : ""}. Ask an admin for access.`;
  if (status === 404) {
    // The record the address names is gone (not some other record the request refers to).
    if (id && details.id !== undefined && String(details.id) === id) {
      return `This ${thing} no longer exists: it may have been deleted. Go back to the list and reload it.`;
    }
    if (/^no route /.test(serverMessage || "")) return "This server does not have this feature (it may be an older version).";
    return sentence(serverMessage) || `This ${thing} no longer exists.`;
  }
  if (status === 413) {
    const limit = bytes(Number(details.limit_bytes));
    return `This is too large for the server${limit ? ` (the limit is ${limit})` : ""}. Send something smaller${details.setting ? `, or ask an admin to raise ${details.setting}` : ""}.`;
  }
  if (status === 422 && code === "validation_error") {
    const fields = fieldProblems(details);
    return fields ? `Check these fields: ${fields}.` : sentence(serverMessage);
  }
  if (status === 429) return `${sentence(serverMessage) || "Too many requests."} Wait a moment, then try again.`;
  if (status === 503) return `${sentence(serverMessage) || "The server is not available right now."} Try again in a moment.`;
  if (status >= 500) {
    const incident = details.incident ? ` (incident ${details.incident})` : "";
    return `The server failed to do this${incident}. Try again; if it keeps failing, the server log has the details.`;
  }
  return sentence(serverMessage) || `The server refused this request (${status}).`;
}

/** An ApiError for a request that got no answer (server down, network cut). */
export function networkError(method, path, cause) {
  return new ApiError(0, "network_error", friendlyMessage(0, "network_error", "", {}, method, path), {},
    `${method} ${path}: no answer (${cause && cause.message ? cause.message : "network error"})`);
}

async function errorFrom(response, method, path) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = body && body.error;
  const code = err ? err.code : "http_error";
  const serverMessage = err ? err.message : "";
  const details = (err && err.details) || {};
  const requestId = response.headers.get("X-Request-ID");
  const technical = `${method} ${path} → ${response.status} ${code}: ${serverMessage || response.statusText}`
    + (requestId ? ` (request ${requestId})` : "");
  let message = friendlyMessage(response.status, code, serverMessage, details, method, path);
  if (requestId && response.status >= 500) message = `${message} Request id: ${requestId}.`;
  return new ApiError(response.status, code, message, details, technical);
}

/** `fetch`, with "no answer at all" turned into an ApiError people can act on. */
async function fetchOrExplain(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw networkError(init.method || "GET", url, error);
  }
}

/**
 * Call the API. Never sends a request without a key (throws NotSignedIn). A 401 signs the user
 * out. Resolves with the parsed JSON (null for 204); rejects with ApiError. `ifMatch`: the
 * version the record was read at; the server refuses the write (412) if it changed since.
 */
async function send(method, path, { body, query, signal, key, ifMatch, accept } = {}) {
  const useKey = key || currentKey();
  if (!useKey) throw new NotSignedIn();
  const headers = authHeaders(useKey, { Accept: accept || "application/json" });
  if (ifMatch !== undefined && ifMatch !== null) headers["If-Match"] = `"${ifMatch}"`;
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const url = buildUrl(path, query);
  const response = await fetchOrExplain(url, init);
  if (response.status === 401 && !key) forgetKey("Your API key was refused (revoked or expired). Sign in again.");
  if (!response.ok) throw await errorFrom(response, method, url);
  return response;
}

async function parsed(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export async function api(method, path, opts = {}) {
  return parsed(await send(method, path, opts));
}

/**
 * One page of a list endpoint: lists are JSON arrays; with a `limit`, the next page's cursor
 * comes in the X-Next-Cursor header (absent on the last page).
 */
export async function getPage(path, query, opts = {}) {
  const response = await send("GET", path, { ...opts, query });
  const items = (await parsed(response)) || [];
  return { items, next_cursor: response.headers.get("X-Next-Cursor") };
}

/**
 * A file the API serves (a CSV export), fetched with the signed-in key: a plain link cannot
 * carry the key (the dashboard uses no cookies), so downloads go through fetch and a blob, as
 * the bundle export does. Resolves with { text, name (from Content-Disposition, or null), type }.
 */
export async function fetchFile(path, query, accept = "text/csv") {
  const response = await send("GET", path, { query, accept });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  return {
    text: await response.text(),
    name: match ? decodeURIComponent(match[1]) : null,
    type: (response.headers.get("Content-Type") || "application/octet-stream").split(";")[0],
  };
}

export const get = (path, query, opts = {}) => api("GET", path, { ...opts, query });
export const post = (path, body, query) => api("POST", path, { body, query });
export const patch = (path, body, opts = {}) => api("PATCH", path, { ...opts, body });
export const put = (path, body, opts = {}) => api("PUT", path, { ...opts, body });
export const del = (path, opts = {}) => api("DELETE", path, opts);

/** A 412: the record was changed by someone else since it was read. */
export const isStale = (error) => error instanceof ApiError && error.status === 412;

/** Every item of a list endpoint (following cursors, at most `maxPages` pages of 200). */
export async function listAll(path, query = {}, maxPages = 10) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const res = await getPage(path, { ...query, limit: 200, cursor });
    items.push(...res.items);
    cursor = res.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/**
 * The API's OpenAPI document, to know which optional endpoints this server has. Fetched once per
 * tab: kept for the page's life and in sessionStorage under the document's version, which the
 * server writes into the page (`<meta name="tbd-openapi">`), so a reload reuses it and a server
 * upgrade does not.
 */
let openapi = null;
export async function features() {
  // One request even when several screens ask at once; a failed one is tried again next time.
  if (!openapi) openapi = loadOpenapi().catch((error) => { openapi = null; throw error; });
  return openapi;
}

async function loadOpenapi() {
  const version = document.querySelector('meta[name="tbd-openapi"]')?.content;
  const storeKey = version ? `tbd-agents.openapi.${version}` : null;
  const kept = storeKey && window.sessionStorage.getItem(storeKey);
  if (kept) {
    try { return JSON.parse(kept); } catch { window.sessionStorage.removeItem(storeKey); }
  }
  const response = await fetch("/openapi.json", { headers: { Accept: "application/json" } });
  if (!response.ok) return { paths: {} };
  const text = await response.text();
  if (storeKey) {
    forgetOpenapi();
    try { window.sessionStorage.setItem(storeKey, text); } catch { /* storage full: page cache only */ }
  }
  return JSON.parse(text);
}

/** Drop the OpenAPI documents kept in sessionStorage (an older version, or on sign-out). */
function forgetOpenapi() {
  const kept = Object.keys(window.sessionStorage).filter((name) => name.startsWith("tbd-agents.openapi."));
  for (const name of kept) window.sessionStorage.removeItem(name);
}

/** True when this server has `method` on the OpenAPI path template `path`. */
export async function hasEndpoint(method, path) {
  const doc = await features();
  const item = (doc.paths || {})[path];
  return Boolean(item && item[method.toLowerCase()]);
}

function resolveSchema(doc, schema) {
  let current = schema;
  for (let i = 0; current && i < 10; i += 1) {
    if (current.$ref) current = current.$ref.split("/").slice(1).reduce((node, part) => node && node[part], doc);
    else if (current.allOf && current.allOf.length === 1) current = current.allOf[0];
    else break;
  }
  return current;
}

/**
 * The JSON body fields that `method` on the record path accepts, as a Set, or null when the
 * server's OpenAPI document does not say. `path` is a collection path ("/api/agents"); with
 * `item` true the item path ("/api/agents/{id}", whatever its parameter is called) is used.
 */
export async function bodyFields(method, path, item = false) {
  const doc = await features();
  const paths = doc.paths || {};
  const key = item ? Object.keys(paths).find((p) => p.startsWith(`${path}/{`) && /^\{[^}/]+\}$/.test(p.slice(path.length + 1))) : path;
  const op = key && paths[key] && paths[key][method.toLowerCase()];
  const schema = op && op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  const resolved = schema ? resolveSchema(doc, schema.schema) : null;
  return resolved && resolved.properties ? new Set(Object.keys(resolved.properties)) : null;
}

/**
 * The `maxLength` the server's OpenAPI document gives the JSON body field `field` of `method`
 * on the path template `path`, or null when it gives none. Lets a form refuse what the server
 * would refuse before sending (and before rendering megabytes into the page).
 */
export async function bodyMaxLength(method, path, field) {
  const doc = await features();
  const op = ((doc.paths || {})[path] || {})[method.toLowerCase()];
  const schema = op && op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  const resolved = schema ? resolveSchema(doc, schema.schema) : null;
  const prop = resolved && resolved.properties && resolved.properties[field];
  const limit = prop ? resolveSchema(doc, prop).maxLength : undefined;
  return Number.isInteger(limit) ? limit : null;
}

/**
 * Parse a Server-Sent Events byte stream from a fetch Response (EventSource cannot send an
 * Authorization header). Calls `onEvent({event, data, id})` per event; `data` is parsed as JSON
 * when it is JSON. Resolves when the stream ends.
 */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let frame = { event: "message", data: [], id: null };
  const dispatch = () => {
    if (frame.data.length) {
      const raw = frame.data.join("\n");
      let data = raw;
      try { data = JSON.parse(raw); } catch { data = raw; }
      onEvent({ event: frame.event, data, id: frame.id });
    }
    frame = { event: "message", data: [], id: null };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") { dispatch(); continue; }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") frame.event = val;
      else if (field === "data") frame.data.push(val);
      else if (field === "id") frame.id = val;
    }
  }
  dispatch();
}

/**
 * Open an SSE endpoint with the key (POST with a JSON body, or GET) and feed its events to
 * `onEvent`. Resolves when the stream ends; rejects with ApiError on an error answer.
 */
export async function stream(method, path, { body, query, signal, onEvent, lastEventId } = {}) {
  const key = currentKey();
  if (!key) throw new NotSignedIn();
  const headers = authHeaders(key, { Accept: "text/event-stream" });
  if (lastEventId) headers["Last-Event-ID"] = String(lastEventId);
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const url = buildUrl(path, query);
  const response = await fetchOrExplain(url, init);
  if (response.status === 401) forgetKey("Your API key was refused. Sign in again.");
  if (!response.ok) throw await errorFrom(response, method, url);
  await readEvents(response, onEvent);
}

/**
 * Upload a multipart form with progress (XMLHttpRequest: fetch reports no upload progress).
 * `onProgress(loaded, total)` is called as bytes leave. Resolves with the JSON answer.
 */
export function upload(path, formData, onProgress) {
  const key = currentKey();
  if (!key) return Promise.reject(new NotSignedIn());
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => onProgress && onProgress(e.loaded, e.lengthComputable ? e.total : 0));
    xhr.addEventListener("error", () => reject(networkError("POST", path)));
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(body); return; }
      if (xhr.status === 401) forgetKey("Your API key was refused. Sign in again.");
      const err = body && body.error;
      const code = err ? err.code : "http_error";
      const details = (err && err.details) || {};
      reject(new ApiError(xhr.status, code, friendlyMessage(xhr.status, code, err ? err.message : "", details, "POST", path),
        details, `POST ${path} → ${xhr.status} ${code}: ${err ? err.message : "upload failed"}`));
    });
    xhr.send(formData);
  });
}

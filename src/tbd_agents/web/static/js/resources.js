// What the dashboard knows about each resource of the API: its path, list columns, form fields,
// what a newcomer should do first, and what deleting it does.

import { listAll } from "./api.js";

const named = (path, hint) => async () => (await listAll(path)).map((r) => ({
  value: r.id,
  label: r.name || r.title || r.key || r.id,
  hint: hint ? hint(r) : r.description || "",
}));

const enumOptions = (...values) => values.map((v) => ({ value: v, label: v.replace(/_/g, " ") }));

export const BUILTIN_TOOLS = [
  { value: "store_memory", label: "store_memory", hint: "remember a fact for later runs" },
  { value: "search_memory", label: "search_memory", hint: "recall stored facts" },
  { value: "search_knowledge", label: "search_knowledge", hint: "search the agent's knowledge sources" },
  { value: "manage_todo_list", label: "manage_todo_list", hint: "the run's todo list, stored as the task's progress" },
  { value: "update_todos", label: "update_todos", hint: "keep a todo list, reported as progress" },
];

// `http` is the existing TBD Agents name of the streamable HTTP transport (same as streamable_http).
const MCP_TRANSPORTS = [
  { value: "stdio", label: "stdio (a local command)" },
  { value: "sse", label: "sse" },
  { value: "http", label: "http (streamable HTTP)" },
  { value: "streamable_http", label: "streamable http (same as http)" },
];

const TAGS = { name: "tags", label: "Tags", kind: "tags", help: "Comma-separated; used to filter and to attach by tag." };
const NAME = { name: "name", label: "Name", kind: "text", required: true };
const DESCRIPTION = { name: "description", label: "Description", kind: "textarea", rows: 2 };

/** Resource definitions keyed by route name. */
export const RESOURCES = {
  agents: {
    path: "/api/agents",
    title: "Agents",
    singular: "agent",
    columns: [["name", "Name"], ["model", "Model"], ["description", "Description"], ["tags", "Tags"]],
    empty: "No agents yet. An agent needs a model provider: add a provider first (and a token holding its API key), then create an agent and chat with it.",
    deleteNote: "Its memories and its saved versions are deleted with it. Workflows and chat sessions that use it must be deleted first.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "system_prompt", label: "System prompt", kind: "textarea", rows: 5, default: "You are a helpful assistant." },
      { name: "provider_id", label: "Provider", kind: "select", nullable: true, noneLabel: "— choose a provider —", options: named("/api/providers", (p) => p.provider_type) },
      { name: "model", label: "Model", kind: "model", help: "Leave empty to use the provider's default model." },
      { name: "temperature", label: "Temperature", kind: "number", nullable: true, min: 0, max: 2, step: 0.1 },
      { name: "max_turns", label: "Max turns", kind: "integer", nullable: true, min: 1, help: "Model calls per run; empty for the default." },
      { name: "output_format", label: "Output format", kind: "select", options: enumOptions("text", "markdown", "json"), default: "text" },
      { name: "memory_enabled", label: "Memory enabled", kind: "checkbox", default: true },
      { name: "builtin_tools", label: "Built-in tools", kind: "multi", options: BUILTIN_TOOLS },
      { name: "mcp_server_ids", label: "MCP servers", kind: "multi", options: named("/api/mcps", (m) => m.transport_type), emptyText: "No MCP servers yet (add them under MCP servers)." },
      { name: "mcp_server_tags", label: "MCP servers by tag", kind: "tags" },
      { name: "custom_tool_ids", label: "Custom tools", kind: "multi", options: named("/api/custom-tools"), emptyText: "No custom tools yet (add them under Custom tools)." },
      { name: "skill_ids", label: "Skills", kind: "multi", options: named("/api/skills"), emptyText: "No skills yet (add them under Skills)." },
      { name: "skill_tags", label: "Skills by tag", kind: "tags" },
      { name: "knowledge_source_ids", label: "Knowledge sources", kind: "multi", options: named("/api/knowledge-sources"), emptyText: "No knowledge sources yet (add them under Knowledge)." },
      { name: "knowledge_tags", label: "Knowledge by tag", kind: "tags" },
      { name: "guardrail_ids", label: "Guardrails", kind: "multi", options: named("/api/guardrails", (g) => `${g.guardrail_type}, ${g.action}`), emptyText: "No guardrails yet (add them under Guardrails)." },
      { name: "agent_tool_ids", label: "Agents as tools", kind: "multi", options: named("/api/agents"), emptyText: "No other agents yet.", help: "Agents this agent may hand a task to; each is offered to its model as a tool (an agent may not call itself, directly or through others)." },
      { name: "tool_definitions", label: "Extra tool definitions (JSON list)", kind: "json", emptyValue: [], placeholder: "[]", rows: 3 },
      TAGS,
      { name: "mcp_exposed", label: "Offer as an MCP tool", kind: "checkbox", default: false, help: "Your MCP clients (Claude Desktop, IDEs…) connected to /mcp with your API key can ask this agent; its description becomes the tool's." },
      { name: "tool_policy", label: "Tool approval policy (JSON)", kind: "json", rows: 4, emptyValue: null, placeholder: "none: every call runs", help: '{"rules": [{"tool": "write_*", "action": "ask"}, {"server": "files", "args": {"path": "^/etc/"}, "action": "never"}], "default": "always", "timeout_seconds": 3600, "on_timeout": "deny"}: which tool calls run, are refused or wait for a person (docs/approvals.md). Empty: every call runs.' },
    ],
  },
  skills: {
    path: "/api/skills",
    title: "Skills",
    singular: "skill",
    columns: [["name", "Name"], ["description", "Description"], ["tags", "Tags"]],
    empty: "No skills yet. A skill is a reusable block of instructions that agents pick up by id or by tag.",
    fields: [NAME, DESCRIPTION, { name: "instructions", label: "Instructions", kind: "textarea", rows: 8 }, TAGS],
  },
  mcps: {
    path: "/api/mcps",
    title: "MCP servers",
    singular: "MCP server",
    columns: [["name", "Name"], ["transport_type", "Transport"], ["status", "Status"], ["allowed_tools", "Allowed tools"]],
    empty: "No MCP servers yet. Add one (stdio command, SSE or streamable HTTP URL) to give agents its tools.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "transport_type", label: "Transport", kind: "select", options: MCP_TRANSPORTS, default: "stdio" },
      { name: "connection_config", label: "Connection (JSON)", kind: "json", rows: 5, help: 'stdio: {"command": "python", "args": ["server.py"], "env": {}}; sse / http: {"url": "http://…", "headers": {}}. Use {{token:NAME}} for secrets.' },
      { name: "allowed_tools", label: "Allowed tools", kind: "lines", help: "One tool name per line; empty allows every tool of the server." },
      TAGS,
    ],
  },
  "custom-tools": {
    path: "/api/custom-tools",
    title: "Custom tools",
    singular: "custom tool",
    columns: [["name", "Name"], ["description", "Description"], ["is_enabled", "Enabled"], ["timeout_seconds", "Timeout (s)"]],
    empty: "No custom tools yet. A custom tool is a Python function run in a sandbox with only the environment you declare.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "source_code", label: "Source code (Python)", kind: "code", rows: 14, default: "def run(**arguments):\n    return {\"echo\": arguments}\n" },
      { name: "parameters_schema", label: "Parameters (JSON Schema)", kind: "json", rows: 6, default: { type: "object", properties: {} } },
      { name: "is_enabled", label: "Enabled", kind: "checkbox", default: true },
      { name: "env_config", label: "Environment", kind: "kv", help: "NAME=value lines; use {{token:NAME}} for secrets (resolved only when the tool runs)." },
      { name: "timeout_seconds", label: "Timeout (seconds)", kind: "integer", min: 1, max: 3600, default: 30 },
      { name: "memory_limit_mb", label: "Memory limit (MB)", kind: "integer", min: 16, max: 65536, default: 256, help: "The operator's SANDBOX_MAX_MEMORY_MB caps it (SANDBOX_MAX_TIMEOUT_SECONDS caps the timeout)." },
      { name: "allowed_hosts", label: "Network: allowed hosts", kind: "tags", help: "Comma-separated host, *.suffix or host:port the tool may reach through the sandbox proxy; empty = no network." },
      TAGS,
    ],
  },
  guardrails: {
    path: "/api/guardrails",
    title: "Guardrails",
    singular: "guardrail",
    columns: [["name", "Name"], ["guardrail_type", "Applies to"], ["action", "Action"], ["enabled", "Enabled"]],
    empty: "No guardrails yet. A guardrail checks prompts, requests, tool calls or answers and blocks, redacts or flags what matches.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "guardrail_type", label: "Applies to", kind: "select", options: enumOptions("prompt", "input", "output", "request", "tool"), default: "input" },
      { name: "action", label: "Action", kind: "select", options: enumOptions("block", "redact", "flag"), default: "block" },
      { name: "enabled", label: "Enabled", kind: "checkbox", default: true },
      { name: "patterns", label: "Patterns (regular expressions)", kind: "lines", rows: 4, help: "Case-sensitive unless a pattern starts with (?i)." },
      { name: "prompt_config", label: "Other checks (JSON)", kind: "json", rows: 4, help: 'e.g. {"max_length": 4000, "pii": true, "json_schema": {…}}, or as TBD Agents wrote them: {"forbidden_patterns": […], "required_patterns": […], "max_length": 4000, "min_length": 1} (case-insensitive).' },
      { name: "request_config", label: "Request schema (JSON)", kind: "json", rows: 5, emptyValue: null, showIf: (v) => v.guardrail_type === "request", help: '{"json_schema": {…}}: the structured request must match it (JSON Schema, draft-07 unless it names another).' },
      { name: "output_config", label: "Answer checks (JSON)", kind: "json", rows: 4, emptyValue: null, showIf: (v) => v.guardrail_type === "output", help: '{"forbidden_patterns": […], "required_patterns": […], "max_length": 4000, "pii_detection": true, "must_be_valid_json": false}' },
      TAGS,
    ],
  },
  providers: {
    path: "/api/providers",
    title: "Providers",
    singular: "provider",
    columns: [["name", "Name"], ["provider_type", "Type"], ["description", "Description"], ["default_model", "Default model"], ["api_key_token_name", "Key token"]],
    empty: "No providers yet. First store the provider's API key as a token (Tokens), then add the provider here and name that token.",
    deleteNote: "Agents that use this provider must be changed or deleted first.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "provider_type", label: "Type", kind: "select", options: enumOptions("openai", "azure_openai", "anthropic", "custom", "github_copilot"), default: "openai" },
      { name: "base_url", label: "Base URL", kind: "text", nullable: true, placeholder: "https://… (empty for the vendor's default)" },
      { name: "api_key_token_name", label: "API key token", kind: "select", nullable: true, noneLabel: "— no key —", options: async () => (await listAll("/api/tokens")).map((t) => ({ value: t.name, label: t.name })), help: "The token holding the API key (its value is never shown here)." },
      { name: "auth_type", label: "Authentication", kind: "select", options: enumOptions("x-api-key", "bearer", "api_key", "none"), default: "x-api-key", help: "x-api-key (or api_key): the provider's own way (Anthropic: x-api-key header; OpenAI-compatible: Bearer). bearer: Authorization: Bearer (Anthropic gateways)." },
      { name: "default_model", label: "Default model", kind: "text", nullable: true },
      { name: "models", label: "Models", kind: "lines", help: "One model name per line (offered when editing agents)." },
      { name: "azure_deployment", label: "Azure deployment", kind: "text", nullable: true, showIf: (v) => v.provider_type === "azure_openai" },
      { name: "azure_api_version", label: "Azure API version", kind: "text", nullable: true, default: "2024-12-01-preview", showIf: (v) => v.provider_type === "azure_openai" },
      { name: "extra_headers", label: "Extra headers", kind: "kv", placeholder: "Header-Name=value (one per line)" },
    ],
  },
  tokens: {
    path: "/api/tokens",
    title: "Tokens",
    singular: "token",
    columns: [["name", "Name"], ["description", "Description"], ["value", "Value"], ["updated_at", "Updated"]],
    empty: "No tokens yet. A token stores a secret (an API key, a password) encrypted; providers, MCP servers and custom tools refer to it by name.",
    deleteNote: "Providers that name this token must be changed first.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "value", label: "Secret value", kind: "secret", required: true, help: "Write-only: stored encrypted and never shown again." },
    ],
  },
  "knowledge-sources": {
    path: "/api/knowledge-sources",
    title: "Knowledge",
    singular: "knowledge source",
    extrasFirst: true,
    columns: [["name", "Name"], ["source_type", "Type"], ["status", "Status"], ["tags", "Tags"]],
    empty: "No knowledge sources yet. Create a source, then add documents to it; agents that list the source can search it.",
    deleteNote: "Its items (documents and their chunks) are deleted with it. Agents that use it must be changed first.",
    fields: [
      NAME,
      DESCRIPTION,
      { name: "source_type", label: "Type", kind: "select", options: enumOptions("manual", "mongo_db", "file", "url", "github", "qdrant", "vector_db", "pgvector"), default: "manual" },
      { name: "connection_config", label: "Connection (JSON)", kind: "json", rows: 3, help: 'Only for external sources. vector_db / qdrant: {"url": "http://…:6333", "collection": "…", "api_key_token_name": "…"}; pgvector: {"dsn": "postgresql://…" or "dsn_token_name": "…", "collection": "…"} (table langchain_pg_embedding_<collection>) or {"uri": …, "table": …}.' },
      TAGS,
    ],
  },
  "knowledge-items": {
    path: "/api/knowledge-items",
    title: "Knowledge items",
    singular: "knowledge item",
    parent: { field: "source_id", route: "knowledge-sources", title: "Knowledge source" },
    columns: [["name", "Name"], ["mime_type", "Type"], ["status", "Status"], ["file_size", "Size"]],
    empty: "No documents in this source yet. Upload a file or add text.",
    fields: [
      { name: "source_id", label: "Source", kind: "select", required: true, options: named("/api/knowledge-sources"), createOnly: true },
      { name: "name", label: "Name", kind: "text" },
      { name: "content_type", label: "Kind", kind: "select", options: enumOptions("text", "file", "image"), default: "text", help: "text: typed or pasted here; file and image: uploaded." },
      { name: "mime_type", label: "Media type", kind: "text", default: "text/markdown" },
      { name: "text_content", label: "Text", kind: "textarea", rows: 10 },
      { name: "file_name", label: "File name", kind: "text", nullable: true },
      { name: "metadata", label: "Metadata (JSON)", kind: "json", rows: 3 },
      TAGS,
    ],
  },
  memories: {
    path: "/api/memories",
    title: "Memories",
    singular: "memory",
    columns: [["key", "Key"], ["value", "Value"], ["scope", "Scope"], ["agent_id", "Agent"], ["ttl", "Expires"]],
    empty: "No memories match. Agents with memory enabled store facts here as they work; you can also add one by hand.",
    filters: [
      { name: "agent_id", label: "Agent", options: named("/api/agents") },
      { name: "scope", label: "Scope", options: async () => enumOptions("session", "agent", "global") },
    ],
    fields: [
      { name: "agent_id", label: "Agent", kind: "select", required: true, options: named("/api/agents") },
      { name: "scope", label: "Scope", kind: "select", options: enumOptions("agent", "session", "global"), default: "agent" },
      { name: "key", label: "Key", kind: "text", required: true },
      { name: "value", label: "Value", kind: "textarea", rows: 4 },
      { name: "session_id", label: "Session id", kind: "text", nullable: true, showIf: (v) => v.scope === "session" },
      { name: "ttl", label: "Expires at", kind: "datetime", nullable: true },
      { name: "ttl_seconds", label: "Forget after (seconds)", kind: "integer", nullable: true, min: 1, help: "Empty: keep until deleted." },
      { name: "metadata", label: "Metadata (JSON)", kind: "json", rows: 3 },
    ],
  },
  workflows: {
    path: "/api/workflows",
    title: "Workflows",
    singular: "workflow",
    extrasFirst: true,
    columns: [["title", "Title"], ["status", "Status"], ["agent_id", "Agent"], ["last_run_at", "Last run"]],
    empty: "No workflows yet. A workflow runs an agent on a prompt in the background, with a live event log, history and optional schedule. Create an agent first.",
    deleteNote: "Its run history and schedules are deleted with it.",
    fields: [
      { name: "title", label: "Title", kind: "text", nullable: true },
      { name: "agent_id", label: "Agent", kind: "select", required: true, options: named("/api/agents") },
      { name: "status", label: "Status", kind: "select", options: enumOptions("active", "inactive"), default: "active", help: "An inactive workflow refuses prompts and runs." },
      DESCRIPTION,
      { name: "model", label: "Model override", kind: "text", nullable: true },
      { name: "max_turns", label: "Max turns", kind: "integer", min: 1, default: 5 },
      { name: "output_format", label: "Output format", kind: "select", options: [{ value: "json", label: "json (the answer wrapped as {\"response\": …})" }, { value: "markdown", label: "markdown (the answer as it is)" }], default: "json" },
      { name: "reasoning_effort", label: "Reasoning effort", kind: "text", nullable: true, placeholder: "low / medium / high", help: "Recorded on each run." },
      { name: "guardrail_ids", label: "Guardrails", kind: "multi", options: named("/api/guardrails", (g) => `${g.guardrail_type}, ${g.action}`), emptyText: "No guardrails yet (add them under Guardrails)." },
      { name: "tool_policy", label: "Tool approval policy (JSON)", kind: "json", rows: 4, emptyValue: null, placeholder: "none: every call runs", help: '{"rules": [{"tool": "write_*", "action": "ask"}, {"server": "files", "args": {"path": "^/etc/"}, "action": "never"}], "default": "always", "timeout_seconds": 3600, "on_timeout": "deny"}: which tool calls run, are refused or wait for a person (docs/approvals.md). Empty: every call runs.' },
      { name: "guardrail_tags", label: "Guardrails by tag", kind: "tags" },
      { name: "skill_ids", label: "Skills", kind: "multi", options: named("/api/skills"), emptyText: "No skills yet (add them under Skills)." },
      { name: "skill_tags", label: "Skills by tag", kind: "tags" },
      { name: "repo_url", label: "Repository URL", kind: "text", nullable: true, inputType: "url", help: "A git repository checked out for each run." },
      { name: "repo_branch", label: "Repository branch", kind: "text", nullable: true },
      { name: "repo_token_name", label: "Repository token", kind: "select", nullable: true, noneLabel: "— public repository —", options: async () => (await listAll("/api/tokens")).map((t) => ({ value: t.name, label: t.name })) },
      { name: "repository_ids", label: "Repository ids", kind: "tags", help: "Kept for clients of the official SDKs, which send them." },
      { name: "repository_tags", label: "Repositories by tag", kind: "tags" },
      { name: "credential_overrides", label: "Credential overrides", kind: "kv", placeholder: "ENV_VAR=token-name (one per line)", help: "Custom tools of this workflow get these environment variables from the named tokens." },
      { name: "infinite_session", label: "Infinite session", kind: "checkbox", default: true, help: "Compact long conversations instead of stopping." },
      { name: "caveman", label: "Terse answers", kind: "checkbox", default: false },
      { name: "bypass_memory", label: "Bypass memory", kind: "checkbox", default: false },
      { name: "auto_memory", label: "Auto memory", kind: "checkbox", default: false },
      { name: "tsv_tool_results", label: "Tool results as TSV", kind: "checkbox", default: false },
      { name: "webhook_url", label: "Webhook URL (on completion)", kind: "text", nullable: true, inputType: "url" },
      { name: "error_webhook_url", label: "Webhook URL (on failure)", kind: "text", nullable: true, inputType: "url" },
      TAGS,
    ],
  },
  "scheduled-agents": {
    path: "/api/scheduled-agents",
    title: "Schedules",
    singular: "schedule",
    columns: [["name", "Name"], ["enabled", "Enabled"], ["when", "When"], ["next_run_at", "Next run"], ["last_run_at", "Last run"]],
    empty: "No schedules yet. A schedule runs a workflow with a prompt every N minutes/hours/days or on a cron expression. Create a workflow first.",
    fields: [
      { name: "name", label: "Name", kind: "text", required: true },
      { name: "workflow_id", label: "Workflow", kind: "select", required: true, options: named("/api/workflows") },
      { name: "prompt", label: "Prompt", kind: "textarea", rows: 3, required: true },
      { name: "mode", label: "Repeat", kind: "select", virtual: true, options: [{ value: "interval", label: "every N minutes / hours / days" }, { value: "cron", label: "on a cron expression" }], default: "interval" },
      { name: "interval_value", label: "Every", kind: "integer", min: 1, default: 1, showIf: (v) => v.mode === "interval" },
      { name: "interval_unit", label: "Unit", kind: "select", options: enumOptions("minutes", "hours", "days", "weeks"), default: "hours", showIf: (v) => v.mode === "interval" },
      { name: "cron_expression", label: "Cron expression", kind: "text", nullable: true, placeholder: "0 9 * * 1-5", help: "minute hour day-of-month month day-of-week, in the time zone below.", showIf: (v) => v.mode === "cron" },
      { name: "timezone", label: "Time zone", kind: "text", default: "UTC", help: "An IANA name such as Europe/Paris." },
      { name: "enabled", label: "Enabled", kind: "checkbox", default: true },
      { name: "start_at", label: "Start at", kind: "datetime", nullable: true },
      { name: "end_at", label: "End at", kind: "datetime", nullable: true },
      { name: "overlap_policy", label: "If the previous run is still going", kind: "select", options: [{ value: "skip", label: "skip this occurrence" }, { value: "allow", label: "start another run" }], default: "skip" },
      { name: "missed_run_policy", label: "After downtime", kind: "select", options: [{ value: "run_once", label: "run once for the missed occurrences" }, { value: "skip", label: "skip missed occurrences" }], default: "run_once" },
    ],
    /** The form's virtual `mode` decides which of interval / cron is sent. */
    prepare(body, all) {
      // In interval mode the cron field is hidden: clear any cron expression saved before.
      return all.mode === "interval" ? { ...body, cron_expression: null } : body;
    },
    fill(record) {
      return { ...record, mode: record.cron_expression ? "cron" : "interval" };
    },
  },
};

/** Fields of `def` usable on an existing record (create-only fields removed). */
export function editFields(def, creating) {
  return def.fields.filter((f) => creating || !f.createOnly);
}

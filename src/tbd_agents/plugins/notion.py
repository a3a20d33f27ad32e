"""`notion`: query databases, read and write pages and blocks through the Notion REST API v1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tbd_agents.plugins.base import Plugin, PluginError, base_url, operation_of

NOTION_API = "https://api.notion.com/v1"
NOTION_VERSION = "2022-06-28"
OPERATIONS = (
    "query_database",
    "get_page",
    "get_block_children",
    "search",
    "create_page",
    "update_page",
    "append_blocks",
)


class NotionPlugin(Plugin):
    name = "notion"
    description = (
        "Notion: query a database, read a page or its blocks, search the workspace, create and "
        "update pages and append blocks (Notion API, integration token)."
    )
    tags = ("notion", "docs")
    env_config = {"NOTION_TOKEN": "{{token:notion-token}}"}
    parameters_schema = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "database_id": {
                "type": "string",
                "description": "query_database; parent of create_page.",
            },
            "page_id": {
                "type": "string",
                "description": "get_page, update_page; parent page of create_page.",
            },
            "block_id": {
                "type": "string",
                "description": "get_block_children, append_blocks (a page id is a block id too).",
            },
            "query": {"type": "string", "description": "Text to search for (search)."},
            "filter": {"type": "object", "description": "Notion filter object."},
            "sorts": {"type": "array", "items": {"type": "object"}},
            "properties": {"type": "object", "description": "Page properties (create/update)."},
            "children": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Block objects (create_page, append_blocks).",
            },
            "archived": {"type": "boolean", "description": "Archive or restore (update_page)."},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
            "start_cursor": {"type": "string"},
        },
        "required": ["operation"],
    }

    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        op = operation_of(args, OPERATIONS)
        api = _Api(
            http, base_url(env, "NOTION_API_URL", NOTION_API), self.need(env, "NOTION_TOKEN")
        )
        paging: dict[str, Any] = {"page_size": int(args.get("page_size") or 50)}
        if args.get("start_cursor"):
            paging["start_cursor"] = args["start_cursor"]
        if op == "query_database":
            body = {**paging, **_pick(args, "filter", "sorts")}
            return await api.call(
                "POST", f"databases/{self.arg(args, 'database_id', op)}/query", body
            )
        if op == "get_page":
            return await api.call("GET", f"pages/{self.arg(args, 'page_id', op)}")
        if op == "get_block_children":
            return await api.call(
                "GET", f"blocks/{self.arg(args, 'block_id', op)}/children", params=paging
            )
        if op == "search":
            return await api.call("POST", "search", {**paging, **_pick(args, "query", "filter")})
        if op == "create_page":
            if args.get("database_id"):
                parent = {"database_id": args["database_id"]}
            elif args.get("page_id"):
                parent = {"page_id": args["page_id"]}
            else:
                raise PluginError("create_page needs database_id or page_id (the parent)")
            body = {"parent": parent, "properties": self.arg(args, "properties", op)}
            body.update(_pick(args, "children"))
            return await api.call("POST", "pages", body)
        if op == "update_page":
            body = _pick(args, "properties", "archived")
            if not body:
                raise PluginError("update_page needs properties or archived")
            return await api.call("PATCH", f"pages/{self.arg(args, 'page_id', op)}", body)
        return await api.call(
            "PATCH",
            f"blocks/{self.arg(args, 'block_id', op)}/children",
            {"children": self.arg(args, "children", op)},
        )


def _pick(args: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: args[k] for k in keys if args.get(k) is not None}


class _Api:
    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}", "Notion-Version": NOTION_VERSION}

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        r = await self.http.request(
            method, f"{self.url}/{path}", json=body, params=params, headers=self.headers
        )
        data = Plugin.json_body(r, "Notion")
        if r.status_code >= 400 or (isinstance(data, dict) and data.get("object") == "error"):
            code = data.get("code", r.status_code) if isinstance(data, dict) else r.status_code
            message = data.get("message", "") if isinstance(data, dict) else ""
            hint = _HINTS.get(str(code), "")
            raise PluginError(f"Notion {method} /{path} failed: {code}: {message}{hint}")
        return data


_HINTS = {
    "unauthorized": " (NOTION_TOKEN is not a valid integration token)",
    "object_not_found": " (check the id, and share the page or database with the integration)",
    "restricted_resource": " (the integration lacks the capability; enable it in Notion)",
    "rate_limited": " (retry later)",
}

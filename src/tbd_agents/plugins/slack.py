"""`slack`: read and post in a Slack workspace through the Slack Web API with a bot token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tbd_agents.plugins.base import Plugin, PluginError, base_url, operation_of

SLACK_API = "https://slack.com/api"
OPERATIONS = (
    "list_channels",
    "get_channel_history",
    "get_thread_replies",
    "search_messages",
    "get_channel_info",
    "send_message",
    "reply_in_thread",
    "add_reaction",
)


class SlackPlugin(Plugin):
    name = "slack"
    description = (
        "Slack: list channels, read channel history and threads, search messages, get channel "
        "info, send messages, reply in threads and add reactions (Slack Web API, bot token)."
    )
    tags = ("slack", "messaging")
    env_config = {"SLACK_BOT_TOKEN": "{{token:slack-bot-token}}"}
    parameters_schema = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "channel_id": {
                "type": "string",
                "description": "Channel id (C…), for most operations.",
            },
            "text": {
                "type": "string",
                "description": "Message text (send_message, reply_in_thread).",
            },
            "thread_ts": {
                "type": "string",
                "description": "Timestamp of the thread's parent message (get_thread_replies, "
                "reply_in_thread).",
            },
            "message_ts": {
                "type": "string",
                "description": "Timestamp of the message to react to.",
            },
            "emoji": {
                "type": "string",
                "description": "Reaction name without colons (add_reaction).",
            },
            "query": {"type": "string", "description": "Search query (search_messages)."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
            "cursor": {"type": "string", "description": "Next-page cursor from a previous answer."},
            "oldest": {"type": "string", "description": "Only messages after this timestamp."},
            "latest": {"type": "string", "description": "Only messages before this timestamp."},
        },
        "required": ["operation"],
    }

    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        op = operation_of(args, OPERATIONS)
        token = self.need(env, "SLACK_BOT_TOKEN")
        api = Api(http, base_url(env, "SLACK_API_URL", SLACK_API), token)
        limit = int(args.get("limit") or 50)
        page = {k: args[k] for k in ("cursor", "oldest", "latest") if args.get(k)}
        if op == "list_channels":
            body = await api.get(
                "conversations.list",
                {"types": "public_channel,private_channel", "exclude_archived": "true",
                 "limit": limit, **page},
            )  # fmt: skip
            return {
                "channels": [_channel(c) for c in body.get("channels", [])],
                "next_cursor": _next(body),
            }
        if op == "get_channel_info":
            body = await api.get(
                "conversations.info", {"channel": self.arg(args, "channel_id", op)}
            )
            return {"channel": _channel(body.get("channel", {}))}
        if op == "get_channel_history":
            channel = self.arg(args, "channel_id", op)
            body = await api.get(
                "conversations.history", {"channel": channel, "limit": limit, **page}
            )
            return {"messages": [_message(m) for m in body.get("messages", [])],
                    "has_more": bool(body.get("has_more")), "next_cursor": _next(body)}  # fmt: skip
        if op == "get_thread_replies":
            body = await api.get(
                "conversations.replies",
                {"channel": self.arg(args, "channel_id", op), "ts": self.arg(args, "thread_ts", op),
                 "limit": limit, **page},
            )  # fmt: skip
            return {"messages": [_message(m) for m in body.get("messages", [])],
                    "has_more": bool(body.get("has_more")), "next_cursor": _next(body)}  # fmt: skip
        if op == "search_messages":
            body = await api.get(
                "search.messages", {"query": self.arg(args, "query", op), "count": min(limit, 100)}
            )
            found = body.get("messages", {})
            return {
                "total": found.get("total", 0),
                "matches": [
                    {**_message(m), "channel": (m.get("channel") or {}).get("name"),
                     "channel_id": (m.get("channel") or {}).get("id"),
                     "permalink": m.get("permalink")}
                    for m in found.get("matches", [])
                ],
            }  # fmt: skip
        if op in ("send_message", "reply_in_thread"):
            payload = {
                "channel": self.arg(args, "channel_id", op),
                "text": self.arg(args, "text", op),
            }
            if op == "reply_in_thread":
                payload["thread_ts"] = self.arg(args, "thread_ts", op)
            body = await api.post("chat.postMessage", payload)
            return {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")}
        body = await api.post(
            "reactions.add",
            {"channel": self.arg(args, "channel_id", op),
             "timestamp": self.arg(args, "message_ts", op),
             "name": str(self.arg(args, "emoji", op)).strip(":")},
        )  # fmt: skip
        return {"ok": True}


class Api:
    """Slack Web API calls: `ok: false` answers become PluginErrors naming the method."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        r = await self.http.get(f"{self.url}/{method}", params=dict(params), headers=self.headers)
        return self._check(method, r)

    async def post(self, method: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        r = await self.http.post(f"{self.url}/{method}", json=dict(payload), headers=self.headers)
        return self._check(method, r)

    @staticmethod
    def _check(method: str, r: httpx.Response) -> dict[str, Any]:
        if r.status_code == 429:
            raise PluginError(
                f"Slack rate-limited {method}; retry after {r.headers.get('Retry-After', '?')} s"
            )
        body = Plugin.json_body(r, f"Slack {method}")
        if not isinstance(body, dict):
            raise PluginError(f"Slack {method} answered HTTP {r.status_code} without an object")
        if not body.get("ok"):
            error = body.get("error") or f"HTTP {r.status_code}"
            hint = _HINTS.get(str(error), "")
            raise PluginError(f"Slack {method} failed: {error}{hint}")
        return body


_HINTS = {
    "invalid_auth": " (SLACK_BOT_TOKEN is not a valid token)",
    "not_authed": " (no token was sent: set SLACK_BOT_TOKEN)",
    "channel_not_found": " (check channel_id, and that the bot is a member of the channel)",
    "not_in_channel": " (invite the bot to the channel first)",
    "missing_scope": " (add the scope the method needs to the Slack app and reinstall it)",
    "not_allowed_token_type": " (search.messages needs a user token, not a bot token)",
}


def _next(body: Mapping[str, Any]) -> str | None:
    return (body.get("response_metadata") or {}).get("next_cursor") or None


def _channel(c: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": c.get("id"),
        "name": c.get("name"),
        "is_private": c.get("is_private"),
        "is_archived": c.get("is_archived"),
        "num_members": c.get("num_members"),
        "topic": (c.get("topic") or {}).get("value"),
        "purpose": (c.get("purpose") or {}).get("value"),
    }


def _message(m: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: m.get(k) for k in ("ts", "user", "username", "text", "thread_ts", "reply_count")}
    return {k: v for k, v in out.items() if v is not None}

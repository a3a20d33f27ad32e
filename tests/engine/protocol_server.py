"""A local HTTP server speaking the OpenAI chat-completions (incl. Azure paths) and Anthropic
messages wire formats, streaming included, that plays scripted turns.

Tests queue `Turn`s (or install a responder that builds a Turn from the request it receives);
every request is recorded with its path, headers and JSON body for assertions. It runs uvicorn in
a background thread on 127.0.0.1 with an ephemeral port.

Like the real APIs, it answers 400 to a conversation whose tool results do not directly follow
the assistant message that made the calls, or that leaves a call without its result
(`history_problem`; `strict_history = False` turns the check off).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    usage: tuple[int, int] = (100, 20)
    status: int = 200  # != 200: an error answer
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_chars: int = 8
    delay: float = 0.0  # seconds between chunks
    hang: float = 0.0  # seconds to sleep before the first byte
    #: Anthropic only: (thinking text, signature) blocks streamed before the text and tool_use
    #: blocks (`thinking_delta`s, then one `signature_delta`), and `redacted_thinking` data.
    thinking: list[tuple[str, str]] = field(default_factory=list)
    redacted_thinking: list[str] = field(default_factory=list)


@dataclass
class Recorded:
    kind: str  # "openai" | "anthropic"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]

    def conversation(self) -> list[dict[str, Any]]:
        """The request's messages in one shape: role, text, tool_calls [(id,name,args)],
        tool_results [(id, text)]."""
        out: list[dict[str, Any]] = []
        if self.kind == "anthropic":
            if self.body.get("system"):
                out.append(
                    {
                        "role": "system",
                        "text": self.body["system"],
                        "tool_calls": [],
                        "tool_results": [],
                    }
                )
            for m in self.body["messages"]:
                blocks = (
                    m["content"]
                    if isinstance(m["content"], list)
                    else [{"type": "text", "text": m["content"]}]
                )
                entry: dict[str, Any] = {
                    "role": m["role"],
                    "text": "",
                    "tool_calls": [],
                    "tool_results": [],
                }
                for b in blocks:
                    if b["type"] == "text":
                        entry["text"] += b["text"]
                    elif b["type"] == "tool_use":
                        entry["tool_calls"].append((b["id"], b["name"], b["input"]))
                    elif b["type"] == "tool_result":
                        content = b["content"]
                        if isinstance(content, list):
                            content = "".join(c.get("text", "") for c in content)
                        entry["tool_results"].append((b["tool_use_id"], content))
                out.append(entry)
            return out
        for m in self.body["messages"]:
            content = m.get("content") or ""
            if isinstance(content, list):  # content parts (text and image_url): the text
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            entry = {
                "role": m["role"],
                "text": content,
                "tool_calls": [],
                "tool_results": [],
            }
            for c in m.get("tool_calls") or []:
                entry["tool_calls"].append(
                    (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                )
            if m["role"] == "tool":
                entry["tool_results"].append((m["tool_call_id"], m["content"]))
                entry["text"] = ""
            out.append(entry)
        return out

    def all_text(self) -> str:
        return "\n".join(
            e["text"] + "".join(r[1] for r in e["tool_results"]) for e in self.conversation()
        )

    def tool_names(self) -> list[str]:
        if self.kind == "anthropic":
            return [t["name"] for t in self.body.get("tools", [])]
        return [t["function"]["name"] for t in self.body.get("tools", [])]


Responder = Callable[[Recorded], Turn]


def history_problem(rec: Recorded) -> str | None:
    """Why a provider would refuse the request's conversation (None: it would not): every tool
    call must be answered by the message(s) right after it (OpenAI: `tool` messages; Anthropic:
    `tool_result` blocks of the next user message), and every tool result must answer a call
    of the message just before."""
    pending: set[str] = set()
    for i, entry in enumerate(rec.conversation()):
        results = entry["tool_results"]
        if pending and not results:
            return (
                f"messages.{i}: an assistant message with tool_calls must be followed by the "
                f"results of each call; no result for {', '.join(sorted(pending))}"
            )
        for call_id, _ in results:
            if call_id not in pending:
                return (
                    f"messages.{i}: tool result {call_id} must be a response to a tool call of "
                    "the preceding message"
                )
            pending.discard(call_id)
        if rec.kind == "anthropic" and results and pending:
            return f"messages.{i}: no tool_result block for {', '.join(sorted(pending))}"
        if entry["tool_calls"]:
            if pending:
                return f"messages.{i}: tool calls {', '.join(sorted(pending))} have no result"
            pending = {c[0] for c in entry["tool_calls"]}
    if pending:
        return (
            f"the conversation ends with tool calls without results: {', '.join(sorted(pending))}"
        )
    return None


def _refusal(rec: Recorded, problem: str) -> Turn:
    if rec.kind == "anthropic":
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}
    else:
        body = {"error": {"message": problem, "type": "invalid_request_error", "code": None}}
    return Turn(status=400, error_body=body)


@dataclass
class CopilotFake:
    """GitHub Copilot's side of the server: the token exchange (`GET
    /copilot_internal/v2/token`, `Authorization: token <github token>`), the model listing
    (`GET /v1/models`, bearer session token) and, when `enforce` is on, a bearer check on
    `/v1/chat/completions` (only session tokens it issued and did not revoke pass)."""

    #: GitHub tokens with Copilot access; any other gets 401 from the exchange.
    github_tokens: set[str] = field(default_factory=set)
    enforce: bool = False
    refresh_in: int = 1500
    ttl: int = 1800
    #: The `endpoints.api` the exchange answers (None: the server's /v1).
    api: str | None = None
    #: Headers of every exchange request, in order.
    exchanges: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    models: list[dict[str, Any]] = field(default_factory=list)
    model_requests: list[dict[str, str]] = field(default_factory=list)
    #: GitHub's `GET /user` (the API's GitHub sign-in): token -> login.
    users: dict[str, str] = field(default_factory=dict)

    def accepts(self, headers: dict[str, str]) -> bool:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        return token in self.issued and token not in self.revoked

    def revoke_all(self) -> None:
        self.revoked.update(self.issued)


class ProtocolServer:
    def __init__(self) -> None:
        self.turns: deque[Turn] = deque()
        self.responder: Responder | None = None
        self.requests: list[Recorded] = []
        self.open_streams = 0
        self.cancelled_streams = 0
        #: time.monotonic() of each stream's first content chunk (for latency benchmarks)
        self.first_chunk_at: list[float] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.copilot = CopilotFake()
        #: Refuse conversations a real provider refuses (`history_problem`), as it would: 400.
        self.strict_history = True
        #: The refusals sent because of `history_problem` (their messages).
        self.refused: list[str] = []
        app = Starlette(
            routes=[
                Route("/copilot_internal/v2/token", self._copilot_token, methods=["GET"]),
                Route("/v1/models", self._copilot_models, methods=["GET"]),
                Route("/user", self._github_user, methods=["GET"]),
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route(
                    "/openai/deployments/{deployment}/chat/completions",
                    self._openai,
                    methods=["POST"],
                ),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> ProtocolServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("protocol server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def reset(self) -> None:
        with self._lock:
            self.turns.clear()
            self.responder = None
            self.requests.clear()
            self.cancelled_streams = 0
            self.copilot = CopilotFake()
            self.strict_history = True
            self.refused.clear()

    def script(self, *turns: Turn) -> None:
        with self._lock:
            self.turns.extend(turns)

    # --- handlers --------------------------------------------------------------------------
    def _next(self, rec: Recorded) -> Turn:
        problem = history_problem(rec) if self.strict_history else None
        with self._lock:
            self.requests.append(rec)
            if problem is not None:  # refused before a scripted turn is used
                self.refused.append(problem)
                return _refusal(rec, problem)
            if self.turns:
                return self.turns.popleft()
            responder = self.responder
        if responder is None:
            return Turn(status=500, error_body={"error": {"message": "no scripted turn left"}})
        return responder(rec)

    async def _record(self, request: Request, kind: str) -> Recorded:
        body = await request.json()
        return Recorded(
            kind, request.url.path, dict(request.query_params), dict(request.headers), body
        )

    async def _openai(self, request: Request) -> Response:
        rec = await self._record(request, "openai")
        if self.copilot.enforce and not self.copilot.accepts(rec.headers):
            with self._lock:
                self.requests.append(rec)
            body = {"error": {"message": "unauthorized: token expired", "code": "unauthorized"}}
            return JSONResponse(body, status_code=401)
        turn = self._next(rec)
        if turn.hang:
            await asyncio.sleep(turn.hang)
        if turn.status != 200:
            body = turn.error_body or {
                "error": {"message": f"scripted {turn.status}", "type": "error"}
            }
            return JSONResponse(body, status_code=turn.status, headers=turn.headers)
        return StreamingResponse(
            self._guard(self._openai_chunks(turn, rec)), media_type="text/event-stream"
        )

    async def _anthropic(self, request: Request) -> Response:
        rec = await self._record(request, "anthropic")
        turn = self._next(rec)
        if turn.hang:
            await asyncio.sleep(turn.hang)
        if turn.status != 200:
            body = turn.error_body or {
                "type": "error",
                "error": {"type": "api_error", "message": f"scripted {turn.status}"},
            }
            return JSONResponse(body, status_code=turn.status, headers=turn.headers)
        return StreamingResponse(
            self._guard(self._anthropic_events(turn, rec)), media_type="text/event-stream"
        )

    async def _copilot_token(self, request: Request) -> Response:
        fake = self.copilot
        headers = dict(request.headers)
        fake.exchanges.append(headers)
        github = headers.get("authorization", "").removeprefix("token ")
        if github not in fake.github_tokens:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        token = f"tid=fake{next(self._ids)};exp={int(time.time()) + fake.ttl};sku=free"
        fake.issued.append(token)
        return JSONResponse(
            {
                "token": token,
                "expires_at": int(time.time()) + fake.ttl,
                "refresh_in": fake.refresh_in,
                "endpoints": {"api": fake.api or f"{self.url}/v1"},
            }
        )

    async def _copilot_models(self, request: Request) -> Response:
        fake = self.copilot
        headers = dict(request.headers)
        fake.model_requests.append(headers)
        if not fake.accepts(headers):
            return JSONResponse({"error": {"message": "unauthorized"}}, status_code=401)
        return JSONResponse({"data": fake.models, "object": "list"})

    async def _github_user(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        login = self.copilot.users.get(token)
        if login is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse({"login": login, "id": 1})

    async def _guard(self, gen: AsyncIterator[str]) -> AsyncIterator[str]:
        self.open_streams += 1
        try:
            async for item in gen:
                yield item
        except asyncio.CancelledError:
            self.cancelled_streams += 1
            raise
        finally:
            self.open_streams -= 1

    @staticmethod
    def _pieces(text: str, size: int) -> list[str]:
        return [text[i : i + size] for i in range(0, len(text), size)] if text else []

    async def _openai_chunks(self, turn: Turn, rec: Recorded) -> AsyncIterator[str]:
        cid = f"chatcmpl-{next(self._ids)}"
        model = rec.body.get("model", "m")

        def chunk(
            delta: dict[str, Any],
            finish: str | None = None,
            usage: Any = None,
            choices: bool = True,
        ) -> str:
            payload: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                if choices
                else [],
            }
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for i, piece in enumerate(self._pieces(turn.text, turn.chunk_chars)):
            if turn.delay:
                await asyncio.sleep(turn.delay)
            if i == 0:
                self.first_chunk_at.append(time.monotonic())
            yield chunk({"content": piece})
        for i, (name, args) in enumerate(turn.tool_calls):
            call_id = f"call_{next(self._ids)}"
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            raw = json.dumps(args)
            for piece in self._pieces(raw, 7):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        yield chunk({}, finish="tool_calls" if turn.tool_calls else "stop")
        usage = {
            "prompt_tokens": turn.usage[0],
            "completion_tokens": turn.usage[1],
            "total_tokens": sum(turn.usage),
        }
        yield chunk({}, usage=usage, choices=False)
        yield "data: [DONE]\n\n"

    async def _anthropic_events(self, turn: Turn, rec: Recorded) -> AsyncIterator[str]:
        def ev(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        mid = f"msg_{next(self._ids)}"
        yield ev(
            "message_start",
            {
                "message": {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": rec.body.get("model", "m"),
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": turn.usage[0], "output_tokens": 1},
                }
            },
        )
        index = 0
        for thought, signature in turn.thinking:
            yield ev(
                "content_block_start",
                {
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            for piece in self._pieces(thought, turn.chunk_chars):
                yield ev(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}},
                )
            yield ev(
                "content_block_delta",
                {"index": index, "delta": {"type": "signature_delta", "signature": signature}},
            )
            yield ev("content_block_stop", {"index": index})
            index += 1
        for data in turn.redacted_thinking:
            yield ev(
                "content_block_start",
                {"index": index, "content_block": {"type": "redacted_thinking", "data": data}},
            )
            yield ev("content_block_stop", {"index": index})
            index += 1
        if turn.text:
            yield ev(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in self._pieces(turn.text, turn.chunk_chars):
                if turn.delay:
                    await asyncio.sleep(turn.delay)
                yield ev(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
            yield ev("content_block_stop", {"index": index})
            index += 1
        for name, args in turn.tool_calls:
            tid = f"toolu_{next(self._ids)}"
            yield ev(
                "content_block_start",
                {
                    "index": index,
                    "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}},
                },
            )
            for piece in self._pieces(json.dumps(args), 7):
                yield ev(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
            yield ev("content_block_stop", {"index": index})
            index += 1
        stop = "tool_use" if turn.tool_calls else "end_turn"
        yield ev(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": turn.usage[1]},
            },
        )
        yield ev("message_stop", {})

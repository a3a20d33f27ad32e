"""An OpenAI-compatible API whose models are agents: `GET /v1/models`, `GET /v1/models/{model}`
and `POST /v1/chat/completions` (streamed or not), in OpenAI's wire shapes, so that the OpenAI
SDKs and the tools built on them can talk to an agent (docs/openai-compatible.md).

A model is an agent the caller can use, named by its id or by its name when that is unique for
the caller (`services/agent_endpoints.py`). The request's messages are the conversation: the
client's system (and `developer`) messages follow the agent's own system prompt; the last
message must be the user's. The agent's tools run on the server and the client sees the answer
only; client-side `tools` / `functions` are refused (400) rather than ignored, since a client
that sends them waits for tool calls that would never come. `n` > 1 is refused; `temperature`
and `max_tokens` / `max_completion_tokens` (a cap below the model's limit) are passed to the
run; other sampling options (`top_p`, `stop`, `seed`, `response_format`…) are ignored: the
agent's configuration decides them.

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with OpenAI's
statuses: 401 for a missing or unknown key, 404 `model_not_found`, 400 for a bad request and for
a message or an answer a guardrail blocked, 5xx when the agent's run failed. A streamed answer
starts once the agent's first text arrives, so a run failing before it still gets its status;
a failure after it is sent as a `data: {"error": …}` event, as OpenAI does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.routers.agent_chat import engine_for
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent
from tbd_agents.engine.answer import AgentAnswer, Conversation, RunFailure, guard_conversation
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.messages import Message
from tbd_agents.errors import TbdError
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.agent_endpoints import resolve_model, usable_agents


class OpenAIError(Exception):
    """An error answered in OpenAI's shape, with OpenAI's status."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code,
        )  # fmt: skip
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message, "type": self.type, "param": self.param, "code": self.code,
            }
        }  # fmt: skip

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        return JSONResponse(
            self.body(), status_code=self.status, headers={**headers, **self.headers}
        )


def _from_domain(exc: TbdError) -> OpenAIError:
    """Our error as OpenAI would answer it: invalid data and guardrails 400, the rest keeps
    its status."""
    field = exc.details.get("field")
    param = field if isinstance(field, str) else None
    status = exc.http_status
    if status == 401:
        return OpenAIError(401, exc.message, code="invalid_api_key")
    if status == 403:
        return OpenAIError(403, exc.message, type_="permission_error", code=exc.code)
    if status == 429:
        error = OpenAIError(429, exc.message, type_="rate_limit_error", code=exc.code)
        retry_after = getattr(exc, "retry_after", None)  # TooManyAttempts
        error.headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else {}
        return error
    if status >= 500:
        return OpenAIError(status, exc.message, type_="server_error", code=exc.code)
    return OpenAIError(400 if status == 422 else status, exc.message, param=param, code=exc.code)


def _from_failure(failure: RunFailure) -> OpenAIError:
    """A run that gave no answer: a guardrail refusing the answer is the request's problem
    (400); any other failure is the server's side (502: the agent's model or tools)."""
    if failure.code == "guardrail_blocked":
        return OpenAIError(400, failure.message, code=failure.code)
    return OpenAIError(502, failure.message, type_="server_error", code=failure.code)


class OpenAIRoute(APIRoute):
    """A route whose errors, the caller's authentication and the body's validation included
    (they happen inside the route's handler), are answered in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except TbdError as exc:
                return _from_domain(exc).response()
            except HTTPException as exc:  # a body that is not JSON
                detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
                return OpenAIError(exc.status_code, detail, code="invalid_request").response()
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p != "body"]
                param = ".".join(loc) or None
                message = f"invalid request: {param or 'body'}: {first.get('msg', 'invalid')}"
                return OpenAIError(400, message, param=param, code="invalid_value").response()

        return answer


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    error: OpenAIErrorDetail


#: The errors of these routes: OpenAI's shape, except unexpected ones (500, and 503: the
#: database), answered in the API's own shape.
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    **{
        status: {"model": OpenAIErrorOut, "description": text}
        for status, text in (
            (400, "Invalid request, a refused option, or a guardrail blocked the message/answer"),
            (401, "Missing or unknown API key"),
            (403, "The key's scope does not allow this"),
            (404, "No such model (agent) for this caller"),
            (429, "Too many failed authentications"),
            (502, "The agent's run failed (its model provider or tools)"),
        )
    },
    **{status: ERRORS[status] for status in (413, 500, 503) if status in ERRORS},
}

router = APIRouter(
    prefix="/v1", tags=["openai-compatible"], route_class=OpenAIRoute, responses=OPENAI_ERRORS
)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body; options not listed here are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200, description="An agent's id or name.")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None


def _model_object(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "object": "model",
        "created": int(agent.created_at.timestamp()),
        "owned_by": agent.created_by or "tbd-agents",
        # Ours: what a model picker can show instead of the id.
        "name": agent.name,
        "description": agent.description,
    }


@router.get("/models", summary="The agents the caller can use, as OpenAI models")
async def list_models(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        agents = await usable_agents(repos, caller)
    return {"object": "list", "data": [_model_object(a) for a in agents]}


@router.get("/models/{model}", summary="One agent as an OpenAI model (by id or unique name)")
async def get_model(
    model: Annotated[str, Path(description="An agent's id or name.")], ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        return _model_object(await resolve_model(repos, caller, model))


def _text(message: ChatMessageIn, index: int) -> str:
    """A message's text: a string, or the text parts of a list (400 for other parts)."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts: list[str] = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(
                400,
                f"messages[{index}]: only text content parts are supported (found a "
                f"{part.get('type')!r} part); send the message's text",
                param=f"messages[{index}].content",
                code="unsupported_content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def conversation_of(messages: list[ChatMessageIn]) -> Conversation:
    """The client's messages as the run's history and prompt: system and developer messages
    first (joined, after the agent's own system prompt), then the turns in their order; the
    last message must be the user's (what the agent answers)."""
    system: list[str] = []
    turns: list[Message] = []
    for i, m in enumerate(messages):
        if m.role in ("tool", "function") or getattr(m, "tool_calls", None):
            raise OpenAIError(
                400,
                f"messages[{i}]: tool calls and tool results are not accepted: the agent runs its "
                "own tools on the server, so a conversation holds user, assistant and system "
                "messages only",
                param=f"messages[{i}]",
                code="unsupported_message",
            )
        text = _text(m, i)
        if m.role in ("system", "developer"):
            if text.strip():
                system.append(text)
        elif m.role == "user":
            turns.append(Message("user", text))
        else:
            turns.append(Message("assistant", text))
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise OpenAIError(
            400,
            "the last message must be a user message with text: it is what the agent answers",
            param="messages",
            code="invalid_value",
        )
    history = [Message("system", "\n\n".join(system))] if system else []
    return Conversation([*history, *turns[:-1]], turns[-1].content)


def _check_options(body: ChatCompletionRequest) -> None:
    if body.n is not None and body.n > 1:
        raise OpenAIError(
            400, "n > 1 is not supported: an agent gives one answer per request; send n=1 or "
            "omit it", param="n", code="unsupported_value",
        )  # fmt: skip
    for name in ("tools", "functions"):
        if getattr(body, name):
            raise OpenAIError(
                400,
                f"`{name}` is not supported: the agent uses its own tools, run on the server, "
                f"and answers with their results; remove `{name}` (give the agent the tools "
                "it needs in its configuration instead)",
                param=name,
                code="unsupported_parameter",
            )


@router.post("/chat/completions", summary="Chat with an agent, OpenAI-style (SSE when stream)")
async def chat_completions(
    body: ChatCompletionRequest, ctx: Ctx, caller: Caller, request: Request
) -> Response:
    caller.require_write()
    _check_options(body)
    conversation = conversation_of(body.messages)
    async with ctx.store.unit_of_work(readonly=True) as repos:
        agent = await resolve_model(repos, caller, body.model)
    services = await engine_for(ctx)
    conversation, guarded = await guard_conversation(services, agent, conversation)
    inp = RunInput(
        conversation.prompt, conversation.history, guarded=guarded, temperature=body.temperature,
        max_output_tokens=body.max_completion_tokens or body.max_tokens,
    )  # fmt: skip
    token = presented_github_token(request.headers.get("authorization"), caller.via)
    answer = AgentAnswer(services, agent, inp, owner=caller.identity, github_token=token)
    head = _Head(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model)
    if not body.stream:
        text = await answer.text()
        if answer.failure is not None:
            raise _from_failure(answer.failure)
        return JSONResponse(head.completion(text, answer))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _streamed(head, answer, include_usage)


class _Head:
    """What every object of one completion shares: id, created, model."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.id, self.created, self.model = completion_id, created, model

    def completion(self, text: str, answer: AgentAnswer) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None, "finish_reason": _finish_reason(answer),
            }],
            "usage": _usage(answer),
        }  # fmt: skip

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, *, usage: bool = False
    ) -> str:
        data: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }  # fmt: skip
        if usage:
            data["usage"] = None  # with include_usage, every chunk but the last has it null
        return _event(data)

    def usage_chunk(self, answer: AgentAnswer) -> str:
        return _event({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None, "choices": [],
            "usage": _usage(answer),
        })  # fmt: skip


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _finish_reason(answer: AgentAnswer) -> str:
    """`stop`, or `length` when the agent ran out of turns before its final answer."""
    result = answer.result
    if result is not None and result.outcome.status is TaskStatus.MAX_TURNS_REACHED:
        return "length"
    return "stop"


def _usage(answer: AgentAnswer) -> dict[str, int]:
    """The whole run's tokens (every model call of it, tool turns included)."""
    usage = answer.result.outcome.usage if answer.result is not None else None
    prompt = usage.input_tokens if usage is not None else 0
    completion = usage.output_tokens if usage is not None else 0
    return {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }  # fmt: skip


async def _streamed(head: _Head, answer: AgentAnswer, include_usage: bool) -> Response:
    """The SSE answer, started once the first text arrives (a run that fails before it gets
    its error status instead of a stream)."""
    deltas = answer.deltas()
    first: str | None = None
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        if answer.failure is not None:
            raise _from_failure(answer.failure) from None

    async def events() -> AsyncIterator[str]:
        try:
            yield head.chunk({"role": "assistant", "content": ""}, usage=include_usage)
            if first is not None:
                yield head.chunk({"content": first}, usage=include_usage)
                async for text in deltas:
                    yield head.chunk({"content": text}, usage=include_usage)
            if answer.failure is not None:
                yield _event(_from_failure(answer.failure).body())
                return
            yield head.chunk({}, _finish_reason(answer), usage=include_usage)
            if include_usage:
                yield head.usage_chunk(answer)
            yield "data: [DONE]\n\n"
        finally:
            await deltas.aclose()  # the client went away: the run and its model call stop

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

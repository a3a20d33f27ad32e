"""Signals of the engine's parts, each against the real thing: model calls through the real
OpenAI SDK on the local protocol server (errors classified by kind, Copilot premium requests),
the loop's tool calls (bounded tool names), guardrail verdicts, and a chat turn on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from opentelemetry.trace import SpanKind, StatusCode

from tbd_agents.config import Settings
from tbd_agents.domain.enums import (
    AuthType,
    GuardrailAction,
    GuardrailType,
    ProviderType,
    TaskStatus,
)
from tbd_agents.domain.models import Agent, Guardrail, Provider, Token
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.guardrails import Guardrails
from tbd_agents.engine.inprocess import engine_services
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import ChatRequest, Completion, Message, ToolSpec
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.engine.tools.base import FunctionTool, ToolResult, Toolset
from tbd_agents.errors import UpstreamError
from tbd_agents.observability import metrics
from tbd_agents.observability.model_calls import instrumented
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.conftest import ADMIN_OWNED, FAST, provider_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder
from tests.observability.conftest import Deltas, by_name, one
from tests.support import pg

MODEL = "gpt-4o"
NO_RETRY = replace(FAST, model_max_retries=0)


async def call(provider: Any, model: str = MODEL) -> Completion | Exception:
    """One model call to its end: the Completion, or the exception it raised."""
    done: Completion | None = None
    try:
        async for event in provider.stream(ChatRequest(model, [Message("user", "hi")])):
            if isinstance(event, Completion):
                done = event
    except Exception as exc:
        return exc
    assert done is not None
    return done


@pytest.mark.parametrize(
    ("turn", "kind"),
    [
        (Turn(status=500, error_body={"error": {"message": "boom"}}), "server"),
        (Turn(status=429, error_body={"error": {"message": "slow down"}}), "rate_limited"),
        (Turn(status=401, error_body={"error": {"message": "bad key"}}), "auth"),
        (Turn(status=400, error_body={"error": {"message": "bad field"}}), "bad_request"),
    ],
)
async def test_failed_model_calls_are_counted_by_kind_and_fail_their_span(
    protocol_server: ProtocolServer, spans: Any, turn: Turn, kind: str
) -> None:
    protocol_server.reset()
    protocol_server.script(turn)
    inner = build_provider(provider_settings("openai", protocol_server.url), NO_RETRY)
    provider = instrumented(
        inner, ProviderType.OPENAI, ModelCatalog.load().get(MODEL), capture_content=False
    )
    deltas = Deltas()
    result = await call(provider)
    await provider.aclose()
    assert isinstance(result, UpstreamError)
    d = deltas.take()
    labels = {"provider_type": "openai", "model": MODEL}
    assert d("tbd_provider_errors_total", kind=kind, **labels) == 1
    assert d("tbd_provider_requests_total", outcome="error", **labels) == 1
    assert d("tbd_provider_requests_total", outcome="ok", **labels) == 0
    assert d("copilot_hub_tokens_total", direction="input", model=MODEL) == 0
    span = one(spans.get_finished_spans(), f"chat {MODEL}")
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(result).__name__
    assert (span.attributes or {})["tbd.error.kind"] == kind


async def test_an_unreachable_provider_is_a_connection_error(spans: Any) -> None:
    settings = provider_settings("openai", "http://127.0.0.1:9")  # nothing listens on port 9
    provider = instrumented(
        build_provider(settings, NO_RETRY), ProviderType.OPENAI,
        ModelCatalog.load().get(MODEL), capture_content=False,
    )  # fmt: skip
    deltas = Deltas()
    assert isinstance(await call(provider), UpstreamError)
    await provider.aclose()
    kind = deltas.take()("tbd_provider_errors_total", provider_type="openai", model=MODEL,
                         kind="connection")  # fmt: skip
    assert kind == 1


async def test_copilot_calls_count_premium_requests_times_the_catalogs_multiplier(
    protocol_server: ProtocolServer, tmp_path: Path, spans: Any
) -> None:
    override = tmp_path / "models.toml"
    override.write_text('[models."claude-opus-x"]\ncontext_window = 200000\n'
                        "max_output_tokens = 8192\ninput_per_mtok = 0\noutput_per_mtok = 0\n"
                        "premium_multiplier = 10\n")  # fmt: skip
    info = ModelCatalog.load(override).get("claude-opus-x")
    assert info.premium_multiplier == 10
    assert ModelCatalog.load().get(MODEL).premium_multiplier == 1  # none given: one per call
    protocol_server.reset()
    protocol_server.script(Turn(text="a"), Turn(text="b"))
    session = "tid=minted-elsewhere;exp=9999999999;sku=free"  # sent as it is: no exchange
    settings = ProviderSettings(
        name="copilot", provider_type=ProviderType.GITHUB_COPILOT, api_key=session,
        auth_type=AuthType.BEARER, base_url=f"{protocol_server.url}/v1", outbound=ADMIN_OWNED,
    )  # fmt: skip
    provider = instrumented(
        build_provider(settings, FAST), ProviderType.GITHUB_COPILOT, info, capture_content=False
    )
    deltas = Deltas()
    for _ in range(2):
        assert isinstance(await call(provider, "claude-opus-x"), Completion)
    await provider.aclose()
    d = deltas.take()
    assert d("premium_requests_total", model="claude-opus-x") == 20
    assert d("cost_dollars_total", model="claude-opus-x") == 0
    assert d("tbd_provider_requests_total", provider_type="github_copilot",
             model="claude-opus-x", outcome="ok") == 2  # fmt: skip
    names = {(s.attributes or {}).get("gen_ai.provider.name") for s in spans.get_finished_spans()}
    assert names == {"github_copilot"}


async def test_the_201st_distinct_tool_name_is_reported_as_other(
    protocol_server: ProtocolServer, monkeypatch: pytest.MonkeyPatch, spans: Any
) -> None:
    """Bounded labels: once `tool_name` holds MAX_LABEL_VALUES values, a new tool's calls are
    counted under `_other`; the tool name stays on its span (spans are not series)."""
    monkeypatch.setitem(metrics._seen, "tool_name", {f"filler-{i}" for i in range(200)})
    assert metrics.bounded("tool_name", "filler-7") == "filler-7"  # known values stay

    async def echo(args: dict[str, Any], ctx: Any) -> ToolResult:
        return ToolResult("echoed")

    tools = Toolset()
    tools.add(FunctionTool(ToolSpec("brand_new_tool", "echo", {"type": "object"}), echo))
    protocol_server.reset()
    protocol_server.script(Turn(tool_calls=[("brand_new_tool", {})]), Turn(text="done"))
    spec = RunSpec(
        provider=build_provider(provider_settings("openai", protocol_server.url), FAST),
        model=MODEL, model_info=ModelCatalog.load().get(MODEL), config=FAST, tools=tools,
    )  # fmt: skip
    deltas = Deltas()
    result = await AgentLoop(spec, Recorder()).run(RunInput("go"))
    assert result.outcome.status is TaskStatus.COMPLETED
    d = deltas.take()
    assert d("tool_calls_total", tool_name="_other") == 1
    assert d("tool_calls_total", tool_name="brand_new_tool") == 0
    assert len(metrics._seen["tool_name"]) == metrics.MAX_LABEL_VALUES
    tool = one(spans.get_finished_spans(), "execute_tool brand_new_tool")
    assert (tool.attributes or {})["gen_ai.tool.name"] == "brand_new_tool"


def _rule(name: str, kind: GuardrailType, action: GuardrailAction, pattern: str) -> Guardrail:
    return Guardrail(name=name, guardrail_type=kind, action=action, patterns=[pattern])


def test_guardrail_checks_are_counted_by_stage_and_outcome(spans: Any) -> None:
    rails = Guardrails.from_records([
        _rule("cards", GuardrailType.INPUT, GuardrailAction.REDACT, r"\d{4}-\d{4}"),
        _rule("secrets", GuardrailType.OUTPUT, GuardrailAction.BLOCK, "s3cr3t"),
        _rule("rm", GuardrailType.TOOL, GuardrailAction.FLAG, "rm -rf"),
    ])  # fmt: skip
    deltas = Deltas()
    assert rails.check_input("pay with 1234-5678").text != "pay with 1234-5678"
    assert rails.check_input("nothing here").text == "nothing here"
    assert rails.check_output("the s3cr3t is out").blocked
    assert rails.check_tool_arguments({"cmd": "rm -rf /"}).violations
    assert not Guardrails([]).check_output("anything").violations  # no rule: no check counted
    d = deltas.take()
    assert d("tbd_guardrail_checks_total", stage="input", outcome="redacted") == 1
    assert d("tbd_guardrail_checks_total", stage="input", outcome="passed") == 1
    assert d("tbd_guardrail_checks_total", stage="output", outcome="blocked") == 1
    assert d("tbd_guardrail_checks_total", stage="tool", outcome="warned") == 1
    assert d("tbd_guardrail_checks_total", stage="output", outcome="passed") == 0
    found = spans.get_finished_spans()
    assert len(by_name(found, "guardrail input")) == 2
    blocked = one(found, "guardrail output")
    assert (blocked.attributes or {})["tbd.guardrail.outcome"] == "blocked"
    assert (blocked.attributes or {})["tbd.guardrail.names"] == ("secrets",)


@pytest.fixture(scope="module")
def chat_db(pg18_server: str) -> Iterator[Any]:
    url = pg.create_migrated_database(pg18_server, prefix="sigchat")
    yield url
    pg.drop_database(url)


async def test_a_chat_turn_is_traced_and_counted(
    chat_db: Any, protocol_server: ProtocolServer, spans: Any, tmp_path: Path
) -> None:
    settings = Settings(
        postgres_uri=chat_db.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp_path, embedding_provider="hashing", outbound_allowed_hosts="127.0.0.1",
    )  # fmt: skip
    store = PostgresStore(create_engine(chat_db, pool_size=2), url=chat_db)
    value, version = KeyRingProvider(settings).cipher().encrypt("sk-chat")
    async with store.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name="k", encrypted_value=value, key_version=version, created_by="carol")
        )
        provider = await repos.providers.create(
            Provider(name=f"p-{time.monotonic_ns()}", provider_type=ProviderType.CUSTOM,
                     api_key_token_name="k", base_url=f"{protocol_server.url}/v1",
                     created_by="carol")
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(name="chatty", model="llama3.1", provider_id=provider.id, created_by="carol")
        )
    services = await engine_services(settings, store)
    protocol_server.reset()
    protocol_server.script(Turn(text="Forty-two."))
    deltas = Deltas()
    try:
        opened = await open_session(services, agent, None, "carol", "What is the answer?")
        frames = [f async for f in chat_stream(services, agent, opened.session, opened.history,
                                               "What is the answer?", guarded=opened.guarded)]  # fmt: skip
    finally:
        await services.aclose()
        await store.close()
    assert "event: done" in frames[-1]
    d = deltas.take()
    assert d("chat_messages_total", role="user") == 1
    assert d("chat_messages_total", role="assistant") == 1
    assert d("chat_response_duration_seconds_count", model="llama3.1") == 1
    assert d("tbd_provider_requests_total", provider_type="custom", model="llama3.1",
             outcome="ok") == 1  # fmt: skip
    found = spans.get_finished_spans()
    turn = one(found, "invoke_agent chatty")
    attrs = turn.attributes or {}
    assert attrs["gen_ai.conversation.id"] == opened.session.id
    assert attrs["tbd.trigger"] == "chat" and attrs["tbd.task.status"] == "completed"
    model_call = one(found, "chat llama3.1")
    assert model_call.parent is not None and model_call.parent.span_id == turn.context.span_id
    assert (model_call.attributes or {})["gen_ai.provider.name"] == "custom"

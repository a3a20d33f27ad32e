"""Redaction reaches storage, the guardrail's own redaction text, one error per failed turn
(issue #16 points 8, 13a, 13b).

8. A `redact` guardrail sent the redacted text to the model but stored the raw text: a card number
   stayed in the chat transcript and the session title, and a schedule's (or a structured
   request's) run kept it in the task's prompt and log. Here a real card number goes in through
   every entry point — a chat turn (PostgreSQL over a socket, and the MongoDB backend), a
   schedule fired by the running hub's scheduler, a workflow prompt with a structured request —
   and must not be found anywhere the hub stores or sends it: messages, title, memories written
   in the turn, stream frames, run events (new and existing stream formats), the task's prompt,
   log and messages, the workflow's conversation, nor any request the model received.
13a. A PII guardrail's own `redaction` text replaces what it finds (it was always
   `[REDACTED:<kind>]`).
13b. A failed chat turn sent two `error` frames (the run's own, then "run failed"); a workflow run
   whose executor raised sent none. Exactly one, on the chat stream, on the run's event stream and
   on the existing workflow stream format.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.domain.enums import GuardrailAction, GuardrailType, IntervalUnit
from tbd_agents.domain.models import Guardrail, ScheduledAgent, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.storage.protocol import Query, eq
from tests.engine.protocol_server import ProtocolServer, Recorded, Turn
from tests.faults import chat_hub
from tests.faults.chat_hub import OWNER, Hub, PgHub, chat, frames, legacy_frames, listed, pg_hub

CARD = "4111 1111 1111 1111"  # a test number that passes the Luhn check
# Any run of its first eight digits, whatever the separators ("4111" alone also matched a
# random id once: `41113c1a-…`).
DIGITS = re.compile(r"4111[\s-]*1111")
MESSAGE = f"My card is {CARD}, please remember it"


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg_api(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgHub]:
    # The running hub's scheduler looks for due schedules twice a second.
    yield from pg_hub(
        pg18_server, tmp_path_factory.mktemp("redact"), "redact", scheduler_poll_seconds=0.5
    )


async def card_guardrail(h: Hub, **prompt_config: Any) -> str:
    """An input guardrail that redacts card numbers, on the hub's agent."""
    async with h.store.unit_of_work() as repos:
        rail = await repos.guardrails.create(
            Guardrail(
                name=f"cards-{h.agent_id[:8]}",
                guardrail_type=GuardrailType.INPUT,
                action=GuardrailAction.REDACT,
                prompt_config={"pii": ["credit_card"], **prompt_config},
                created_by=OWNER,
            )
        )
        await repos.agents.update(h.agent_id, {"guardrail_ids": [rail.id]})
    return rail.id


def echo_into_memory(rec: Recorded) -> Turn:
    """The model stores what it was told as a memory, then repeats it: whatever reached the
    model ends up in a memory and in the answer."""
    conversation = rec.conversation()
    said = next(e["text"] for e in reversed(conversation) if e["role"] == "user" and e["text"])
    if not any(e["tool_calls"] for e in conversation):
        return Turn(tool_calls=[("store_memory", {"key": "what the user said", "value": said})])
    return Turn(text=f"Noted: {said}")


def nowhere(what: Any, where: str) -> None:
    text = what if isinstance(what, str) else json.dumps(what, default=str)
    assert not DIGITS.search(text), f"the card number is in {where}: {text[:400]}"


@pytest.mark.parametrize("backend", ["postgres", "mongo"])
async def test_a_redacted_card_number_is_stored_redacted_everywhere(
    backend: str, model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    model.reset()
    model.responder = echo_into_memory
    async with chat_hub.hub(
        backend, "openai", model.url, pg_api, tmp_path,
        builtin_tools=["store_memory"], memory_enabled=True,
    ) as h:  # fmt: skip
        await card_guardrail(h)
        response, got = await chat(h, MESSAGE)
        assert response.status_code == 200, response.text
        assert got[-1][0] == "done" and got[-1][1]["status"] == "completed", got[-3:]
        session_id = got[0][1]["session_id"]
        nowhere(response.text, "the chat stream")
        violations = [d for n, d in got if n == "log" and d.get("event") == "guardrail_violation"]
        assert len(violations) == 1 and "credit card" in violations[0]["message"]

        for request in model.requests:
            nowhere(request.body, "a request to the model")
        messages = await listed(h, session_id)
        nowhere(messages, "the stored messages")
        assert messages[0]["content"] == "My card is [REDACTED:credit_card], please remember it"
        sessions = (await h.client.get(f"/api/agents/{h.agent_id}/chat/sessions")).json()
        nowhere(sessions, "the session list")
        assert sessions[0]["title"] == messages[0]["content"]
        detail = await h.client.get(f"/api/agents/{h.agent_id}/chat/sessions/{session_id}")
        nowhere(detail.json(), "the session detail")
        memories = (await h.client.get("/api/memories", params={"agent_id": h.agent_id})).json()
        assert memories, "the turn wrote no memory"
        nowhere(memories, "the memories")

        # the next turn's history is the stored, redacted one
        model.reset()
        model.script(Turn(text="ok"))
        response, got = await chat(h, "and again?", session_id)
        assert got[-1][1]["status"] == "completed", got[-3:]
        nowhere(model.requests[0].body, "the next turn's history")


@pytest.mark.parametrize("backend", ["postgres", "mongo"])
async def test_the_guardrails_own_redaction_text_replaces_pii(
    backend: str, model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    model.reset()
    model.script(Turn(text="ok"))
    async with chat_hub.hub(backend, "anthropic", model.url, pg_api, tmp_path) as h:
        await card_guardrail(h, redaction="<card removed>")
        _, got = await chat(h, MESSAGE)
        assert got[-1][1]["status"] == "completed", got[-3:]
        sent = model.requests[0].all_text()
        assert "My card is <card removed>, please remember it" in sent
        assert "REDACTED" not in sent
        messages = await listed(h, got[0][1]["session_id"])
        assert messages[0]["content"] == "My card is <card removed>, please remember it"


async def run_events(h: Hub, task_id: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The run's whole event stream, once it has ended: its body and frames."""
    response = await h.client.get(f"/api/tasks/{task_id}/events", timeout=60)
    assert response.status_code == 200, response.text
    return response.text, frames(response.text)


async def finished(h: Hub, task_id: str) -> dict[str, Any]:
    await run_events(h, task_id)  # the stream ends after the run's final status
    task = await h.client.get(f"/api/tasks/{task_id}")
    assert task.status_code == 200, task.text
    return dict(task.json())


async def workflow_of(h: Hub) -> str:
    async with h.store.unit_of_work() as repos:
        workflow = await repos.workflows.create(
            Workflow(agent_id=h.agent_id, title="cards", github_user=OWNER, max_turns=3)
        )
    return workflow.id


async def test_schedule_and_structured_request_runs_store_the_redacted_prompt(
    model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    """A schedule's prompt reaches the run without the API's check; a structured request's
    JSON was never checked by input guardrails before it was stored: both are stored (task
    prompt, log, messages, events, the workflow's conversation) as the model saw them."""
    model.reset()
    model.responder = lambda rec: Turn(text="Done.")
    async with chat_hub.hub("postgres", "openai", model.url, pg_api, tmp_path) as h:
        await card_guardrail(h)
        workflow_id = await workflow_of(h)
        now = utcnow()
        async with h.store.unit_of_work() as repos:
            schedule = await repos.scheduled_agents.create(
                ScheduledAgent(
                    workflow_id=workflow_id, prompt=MESSAGE, interval_value=1,
                    interval_unit=IntervalUnit.HOURS, start_at=now - timedelta(seconds=5),
                    next_run_at=now - timedelta(seconds=5), github_user=OWNER,
                )
            )  # fmt: skip
        task_id = None
        for _ in range(300):  # the hub's scheduler fires it within a second or so
            async with h.store.unit_of_work(readonly=True) as repos:
                page = await repos.task_executions.list(
                    Query(filters=(eq("scheduled_agent_id", schedule.id),))
                )
            if page.items:
                task_id = page.items[0].id
                break
            await asyncio.sleep(0.1)
        assert task_id is not None, "the schedule never fired"
        scheduled = await finished(h, task_id)
        assert scheduled["status"] == "completed", scheduled.get("error")
        assert scheduled["prompt"] == "My card is [REDACTED:credit_card], please remember it"

        prompted = await h.client.post(
            f"/api/workflows/{workflow_id}/prompt",
            json={"prompt": "charge it", "request": {"note": MESSAGE, "amount": 12}},
        )
        assert prompted.status_code == 201, prompted.text
        structured = await finished(h, prompted.json()["task_id"])
        assert structured["status"] == "completed", structured.get("error")
        assert json.loads(structured["prompt"]) == {
            "note": "My card is [REDACTED:credit_card], please remember it",
            "amount": 12,
        }

        for task in (scheduled, structured):
            nowhere(task, f"task {task['id']}")
            body, _ = await run_events(h, task["id"])
            nowhere(body, f"the events of task {task['id']}")
        legacy = await h.client.get(f"/api/workflows/{workflow_id}/stream", timeout=60)
        nowhere(legacy.text, "the workflow stream")
        nowhere((await h.client.get(f"/api/workflows/{workflow_id}")).json(), "the workflow")
        for request in model.requests:
            nowhere(request.body, "a request to the model")


@pytest.mark.parametrize("backend", ["postgres", "mongo"])
async def test_a_failed_chat_turn_sends_one_error(
    backend: str, model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    """The provider refuses the request (a non-retryable 400), then an output guardrail blocks
    the answer: each failed turn ends with exactly one `error` frame, then `done`."""
    model.reset()
    async with chat_hub.hub(backend, "openai", model.url, pg_api, tmp_path) as h:
        model.script(
            Turn(status=400, error_body={"error": {"message": "bad request", "type": "x"}})
        )
        _, got = await chat(h, "hello")
        names = [n for n, _ in got]
        assert names.count("error") == 1, got
        assert names[-2:] == ["error", "done"] and got[-1][1]["status"] == "failed"

        async with h.store.unit_of_work() as repos:
            rail = await repos.guardrails.create(
                Guardrail(
                    name=f"no-secrets-{h.agent_id[:8]}", guardrail_type=GuardrailType.OUTPUT,
                    action=GuardrailAction.BLOCK, patterns=["secret"], created_by=OWNER,
                )
            )  # fmt: skip
            await repos.agents.update(h.agent_id, {"guardrail_ids": [rail.id]})
        model.script(Turn(text="the secret is 42"))
        _, got = await chat(h, "tell me")
        names = [n for n, _ in got]
        assert names.count("error") == 1, got
        assert got[names.index("error")][1]["code"] == "guardrail_blocked"


async def test_a_failed_workflow_run_reports_one_error(
    model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    """A run whose model call fails, and one whose executor raises before the loop (its
    agent's provider is gone): one `error` event each on the run's stream, one `error` log
    frame each on the existing workflow stream."""
    model.reset()
    async with chat_hub.hub("postgres", "openai", model.url, pg_api, tmp_path) as h:
        workflow_id = await workflow_of(h)
        model.script(Turn(status=400, error_body={"error": {"message": "no", "type": "x"}}))
        first = await h.client.post(f"/api/workflows/{workflow_id}/runs", json={"prompt": "hi"})
        assert first.status_code == 202, first.text
        _, got = await run_events(h, first.json()["id"])
        assert [n for n, _ in got].count("error") == 1, got
        async with h.store.unit_of_work() as repos:
            await repos.agents.update(h.agent_id, {"provider_id": "gone"})
        second = await h.client.post(f"/api/workflows/{workflow_id}/runs", json={"prompt": "hi"})
        assert second.status_code == 202, second.text
        _, got = await run_events(h, second.json()["id"])
        assert [n for n, _ in got].count("error") == 1, got
        assert got[-1][1]["status"] == "failed"
        legacy = await h.client.get(f"/api/workflows/{workflow_id}/stream", timeout=60)
        logged = [f for f in legacy_frames(legacy.text) if f["type"] == "log"]
        assert [f["data"]["event"] for f in logged].count("error") == 1, logged

"""The Python client against the real API on a socket: CRUD on every resource, a run to
completion on the scripted model (run_prompt and the typed stream), chat, errors, and a script
written for the official SDK running unchanged."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tbd_agents
from tbd_agents.client import (
    Agent,
    ApiError,
    TaskStatus,
    TbdAgentsClient,
    TransportError,
    WorkflowCreate,
    WorkflowStreamEvent,
)
from tests.client.conftest import Server, scripted_agent
from tests.engine.protocol_server import ProtocolServer, Turn

SRC = Path(__file__).resolve().parents[2] / "src"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def crud(resource: Any, body: dict[str, Any], change: dict[str, Any]) -> Any:
    """create, get, list, update, delete one record of `resource`; the updated record."""
    created = resource.create(body)
    assert created.id and created.created_at is not None
    assert resource.get(created.id).id == created.id
    assert created.id in {r.id for r in resource.list()}
    updated = resource.update(created.id, change)
    for name, value in change.items():
        assert getattr(updated, name) == value
    assert resource.get(created.id).model_dump()[next(iter(change))] == next(iter(change.values()))
    resource.delete(created.id)
    with pytest.raises(ApiError) as gone:
        resource.get(created.id)
    assert gone.value.status_code == 404
    return updated


def test_crud_on_every_resource(client: TbdAgentsClient) -> None:
    assert client.health.get().status == "ok"
    agent = client.agents.create({"name": uniq("agent"), "description": "first"})
    assert isinstance(agent, Agent) and agent.description == "first"
    crud(client.agents, {"name": uniq("a")}, {"description": "changed"})
    crud(
        client.skills, {"name": uniq("s"), "instructions": "be brief"}, {"instructions": "be kind"}
    )
    crud(
        client.guardrails,
        {"name": uniq("g"), "guardrail_type": "prompt", "prompt_config": {"max_length": 100}},
        {"enabled": False},
    )
    crud(
        client.mcps,
        {"name": uniq("m"), "transport_type": "stdio", "connection_config": {"command": "echo"}},
        {"tags": ["x"]},
    )
    crud(client.custom_tools, {"name": uniq("ct")}, {"description": "changed"})
    token = crud(
        client.tokens,
        {"name": uniq("tok"), "value": "a-secret-value-1234"},
        {"description": "rotated"},
    )
    assert token.masked_value and "a-secret" not in token.model_dump_json()
    provider_token = client.tokens.create({"name": uniq("tok"), "value": "sk-not-real"})
    crud(
        client.providers,
        {"name": uniq("p"), "provider_type": "openai", "api_key_token_name": provider_token.name},
        {"description": "d"},
    )
    source = client.knowledge_sources.create({"name": uniq("ks"), "tags": ["docs"]})
    assert source.id in {s.id for s in client.knowledge_sources.list(tags=["docs"])}
    crud(
        client.knowledge_items,
        {"source_id": source.id, "name": "i", "text_content": "hello"},
        {"name": "renamed"},
    )
    crud(
        client.memories,
        {"agent_id": agent.id, "scope": "agent", "key": uniq("k"), "value": "v"},
        {"value": "w"},
    )
    workflow = crud(
        client.workflows, WorkflowCreate(agent_id=agent.id, title="wf"), {"title": "renamed"}
    )
    assert workflow.agent_id == agent.id
    kept = client.workflows.create({"agent_id": agent.id, "title": "scheduled"})
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    schedule = crud(
        client.scheduled_agents,
        {
            "name": uniq("sched"),
            "workflow_id": kept.id,
            "prompt": "hi",
            "interval_value": 2,
            "interval_unit": "hours",
            "start_at": start,
        },
        {"prompt": "changed"},
    )
    assert schedule.interval_value == 2
    bundle = client.agents.export(agent.id)
    assert bundle.resource_type == "agent" and bundle.items[0]["name"] == agent.name
    imported = client.agents.import_({"items": bundle.items})
    assert imported.created == 1 and len(imported.ids) == 1


def test_errors_carry_status_and_detail(server: Server, client: TbdAgentsClient) -> None:
    with pytest.raises(ApiError) as missing:
        client.agents.get("no-such-agent")
    assert missing.value.status_code == 404 and missing.value.code == "not_found"
    assert missing.value.detail == missing.value.body["detail"]
    with pytest.raises(ApiError) as invalid:
        client.agents.create({"name": "x", "no_such_field": 1})
    assert invalid.value.status_code == 422 and "no_such_field" in invalid.value.detail
    with TbdAgentsClient(base_url=server.url, token="wrong") as anonymous:
        with pytest.raises(ApiError) as denied:
            anonymous.agents.list()
        assert denied.value.status_code == 401
        assert anonymous.health.get().status == "ok"  # /health is outside /api and open
    with (
        TbdAgentsClient(base_url="http://127.0.0.1:9", token="k") as nowhere,
        pytest.raises(TransportError),
    ):
        nowhere.agents.list()
    with pytest.raises(ValueError, match="http"):
        TbdAgentsClient(base_url="127.0.0.1:8000", token="k")


def test_run_prompt_and_stream_against_the_scripted_model(
    client: TbdAgentsClient, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    agent_id = scripted_agent(client, protocol_server)
    workflow = client.workflows.create(
        WorkflowCreate(agent_id=agent_id, title="run me", output_format="markdown")
    )
    protocol_server.script(Turn(text="Forty-two, and nothing else."))
    task = client.workflows.run_prompt(workflow.id, prompt="What is the answer?", interval=0.1)
    assert task.status == TaskStatus.COMPLETED
    assert task.response == "Forty-two, and nothing else."
    assert "What is the answer?" in protocol_server.requests[-1].all_text()
    assert [t.id for t in client.workflows.list_tasks(workflow.id)] == [task.id]
    assert client.tasks.get(task.id).usage is not None

    # a second run, followed live through the typed stream
    protocol_server.script(Turn(text="Streaming along nicely.", chunk_chars=4, delay=0.02))
    started = client.workflows.send_prompt(workflow.id, prompt="Again?")
    assert started.status == "running" and started.task_id
    events = list(client.workflows.stream(workflow.id))
    assert all(isinstance(e, WorkflowStreamEvent) for e in events)
    types = [e.type for e in events]
    assert "message_delta" in types and types[-1] == "status"
    assert events[-1].data["status"] == "completed"
    deltas = "".join(e.data.get("content", "") for e in events if e.type == "message_delta")
    assert deltas == "Streaming along nicely."
    final = client.workflows.wait_for_task(started.task_id, interval=0.1, timeout=30)
    assert final.response == "Streaming along nicely."
    # replay after an event id: only what followed it
    replay = list(client.workflows.stream(workflow.id, last_event_id=events[-2].id))
    assert [e.id for e in replay] == [events[-1].id]


def test_chat_streams_and_keeps_sessions(
    client: TbdAgentsClient, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    agent_id = scripted_agent(client, protocol_server)
    protocol_server.script(Turn(text="Hello there, human."))
    events = list(client.chat.stream(agent_id, "Hi!"))
    assert events[0].type == "session" and events[-1].type == "done"
    answer = "".join(e.data["content"] for e in events if e.type == "delta")
    assert answer == "Hello there, human."
    session_id = events[0].data["session_id"]
    protocol_server.script(Turn(text="Still here."))
    frames = list(
        client.chat.send_message(agent_id, {"message": "Still?", "session_id": session_id})
    )
    assert '"Still here."' not in frames[0] and any("Still" in f for f in frames)
    sessions = client.chat.list_sessions(agent_id)
    assert [s.id for s in sessions] == [session_id] and sessions[0].message_count == 4
    detail = client.chat.get_session(agent_id, session_id)
    assert [m.role for m in detail.messages] == ["user", "assistant", "user", "assistant"]
    client.chat.delete_session(agent_id, session_id)
    assert client.chat.list_sessions(agent_id) == []


SDK_SCRIPT = """
    import sys
    from tbd_agents import ApiError, TbdAgentsClient, WorkflowCreate

    with TbdAgentsClient(base_url=sys.argv[1], token=sys.argv[2]) as client:
        health = client.health.get()
        agent = client.agents.create({"name": "from-an-sdk-script"})
        workflow = client.workflows.create(
            WorkflowCreate(agent_id=agent.id, title="SDK onboarding", output_format="markdown")
        )
        agents = client.agents.list()
        try:
            client.workflows.get("missing")
        except ApiError as exc:
            print("error", exc.status_code)
        print(health.status, len(agents), workflow.title, workflow.agent_id == agent.id)
"""


def test_a_script_written_for_the_official_sdk_runs_unchanged(
    server: Server, key: str, tmp_path: Path
) -> None:
    script = tmp_path / "sdk_script.py"
    script.write_text(textwrap.dedent(SDK_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), f"{server.url}/api", key],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "error 404"
    status, count, rest = lines[1].split(" ", 2)
    assert (status, rest) == ("ok", "SDK onboarding True") and int(count) >= 1


def test_import_tbd_agents_stays_light() -> None:
    code = (
        "import sys, tbd_agents; print('httpx' in sys.modules, 'tbd_agents.client' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}
    )
    assert out.stdout.strip() == "False False"
    assert tbd_agents.TbdAgentsClient is TbdAgentsClient
    with pytest.raises(AttributeError):
        tbd_agents.NoSuchThing  # noqa: B018

"""Human approval of tool calls, end to end: the API on a real socket over an embedded
PostgreSQL, the real agent engine, the scripted model server speaking the OpenAI wire protocol,
and the demo MCP server (stdio) whose `lookup_order` answers with the order id it received.

A policy that says `ask` pauses the run (status awaiting_approval, no worker holding it, an
`approval_requested` event and webhook); a decision through the API or the signed link resumes
it from the saved conversation. Durability: the paused run survives a restart of the server
and a kill -9 of the process that ran it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.security.cipher import generate_fernet_key
from tests.api.live import free_port, live_server
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.runtime.approval_support import FERNET, approval_settings, demo_mcp, wait_status
from tests.support import pg

ROOT = Path(__file__).resolve().parents[2]
ASK_LOOKUP = {"rules": [{"tool": "lookup_order", "action": "ask"}]}


@dataclass
class Env:
    url: str
    db: URL
    data_dir: Path
    model: ProtocolServer
    admin_key: str

    @property
    def postgres_uri(self) -> str:
        return self.db.render_as_string(hide_password=False)

    def client(self, key: str | None = None, url: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=url or self.url, headers=headers, timeout=30)

    def key(self, owner: str, scope: str = "user") -> str:
        with self.client() as c:
            resp = c.post("/api/keys", json={"owner": owner, "scope": scope, "name": "t"})
            assert resp.status_code == 201, resp.text
            return str(resp.json()["key"])


def _admin_key(db: URL) -> str:
    import asyncio

    from tbd_agents.domain.auth import KeyScope
    from tbd_agents.services.keys import ApiKeys
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore

    async def make() -> str:
        store = PostgresStore(create_engine(db, pool_size=1), url=db)
        try:
            async with store.unit_of_work() as repos:
                made = await ApiKeys(repos).create("approver", scope=KeyScope.ADMIN, name="t")
            return made.plaintext
        finally:
            await store.close()

    return asyncio.run(make())


@pytest.fixture(scope="module")
def env(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    db = pg.create_migrated_database(pg18_server, prefix="approvals")
    data_dir = tmp_path_factory.mktemp("approvals")
    model = ProtocolServer().start()
    settings = approval_settings(data_dir, db.render_as_string(hide_password=False))
    try:
        with live_server(settings) as url:
            yield Env(url, db, data_dir, model, _admin_key(db))
    finally:
        model.stop()
        pg.drop_database(db)


@pytest.fixture
def model(env: Env) -> ProtocolServer:
    env.model.reset()
    return env.model


def _created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code in (200, 201), resp.text
    body: dict[str, Any] = resp.json()
    return body


def make_workflow(
    env: Env,
    *,
    agent_policy: dict[str, Any] | None = None,
    workflow_policy: dict[str, Any] | None = None,
    **workflow: Any,
) -> str:
    """A workflow whose agent talks to the scripted model and has the demo MCP server."""
    name = uuid.uuid4().hex[:8]
    with env.client() as c:
        _created(c.post("/api/tokens", json={"name": f"k_{name}", "value": "sk-not-real"}))
        provider = _created(
            c.post(
                "/api/providers",
                json={
                    "name": f"p-{name}",
                    "provider_type": "custom",
                    "api_key_token_name": f"k_{name}",
                    "base_url": f"{env.model.url}/v1",
                },
            )
        )
        server = _created(
            c.post("/api/mcps", json={"name": f"demo-{name}", "connection_config": demo_mcp()})
        )
        agent = _created(
            c.post(
                "/api/agents",
                json={
                    "name": f"a-{name}",
                    "model": "llama3.1",
                    "provider_id": provider["id"],
                    "mcp_server_ids": [server["id"]],
                    "tool_policy": agent_policy,
                },
            )
        )
        body = {"title": f"w-{name}", "agent_id": agent["id"], "output_format": "text",
                "tool_policy": workflow_policy, **workflow}  # fmt: skip
        return str(_created(c.post("/api/workflows", json=body))["id"])


def agent_of(env: Env, workflow_id: str) -> str:
    with env.client() as c:
        return str(c.get(f"/api/workflows/{workflow_id}").json()["agent_id"])


def start_run(c: httpx.Client, workflow_id: str, prompt: str = "where is order 42?") -> str:
    resp = c.post(f"/api/workflows/{workflow_id}/runs", json={"prompt": prompt})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def events(c: httpx.Client, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a finished run (the stream ends after its final status)."""
    out: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    with c.stream("GET", f"/api/tasks/{task_id}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def pending_approval(c: httpx.Client, task_id: str) -> dict[str, Any]:
    resp = c.get("/api/approvals", params={"task_id": task_id})
    assert resp.status_code == 200, resp.text
    (approval,) = resp.json()
    return dict(approval)


def tool_results(model: ProtocolServer) -> list[str]:
    """The tool results in the conversation the model last received (the workflow's
    conversation: earlier runs' results included), in order."""
    if not model.requests:
        return []
    return [text for m in model.requests[-1].conversation() for _id, text in m["tool_results"]]


def lookup_then_answer(model: ProtocolServer, order_id: str = "42") -> None:
    model.script(Turn(tool_calls=[("lookup_order", {"order_id": order_id})]), Turn(text="all done"))


# --- pausing and deciding ---------------------------------------------------------------------
def test_ask_pauses_the_run_and_approval_runs_the_tool(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        paused = wait_status(c, task_id, {"awaiting_approval", "completed", "failed"})
        assert paused["status"] == "awaiting_approval"
        assert paused["worker"] is None  # no worker holds a waiting run
        assert [e["event"] for e in paused["logs"]][-1] == "approval_requested"
        assert len(model.requests) == 1 and tool_results(model) == []  # the tool did not run
        approval = pending_approval(c, task_id)
        assert approval["tool_name"] == "lookup_order"
        assert approval["arguments"] == {"order_id": "42"}
        assert approval["status"] == "pending" and approval["origin"].startswith("mcp:demo-")
        assert approval["links"]["decide_url"].startswith(f"/api/approvals/{approval['id']}/")
        # The workflow refuses a second prompt while its run waits.
        assert c.post(f"/api/workflows/{workflow}/prompt", json={"prompt": "x"}).status_code == 400

        decided = c.post(f"/api/approvals/{approval['id']}/approve")
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "approved"
        done = wait_status(c, task_id, {"completed", "failed"})
        assert done["status"] == "completed", done
        assert done["response"] == "all done"
        assert tool_results(model) == ["order 42: shipped"]
        logged = [e["event"] for e in done["logs"]]  # the log spans the pause
        assert logged.index("approval_requested") < logged.index("tool_result")
        stream = events(c, task_id)
    kinds = [k for k, _ in stream]
    requested = next(d for k, d in stream if k == "approval_requested")
    assert requested["approval_id"] == approval["id"]
    assert requested["tool"] == "lookup_order" and requested["arguments"] == {"order_id": "42"}
    assert requested["expires_at"] and requested["approve_url"].endswith("/approve")
    statuses = [d["status"] for k, d in stream if k == "status"]
    assert "awaiting_approval" in statuses and statuses[-1] == "completed"
    assert kinds.index("approval_requested") < kinds.index("approval_decided")
    # Deciding twice is a conflict.
    with env.client() as c:
        again = c.post(f"/api/approvals/{approval['id']}/deny")
    assert again.status_code == 409, again.text


def test_edited_arguments_are_what_the_tool_receives(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, workflow_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
        bad = c.post(f"/api/approvals/{approval['id']}/approve", json={"arguments": {"x": 1}})
        assert bad.status_code == 422, bad.text
        assert "order_id" in bad.text
        resp = c.post(
            f"/api/approvals/{approval['id']}/approve", json={"arguments": {"order_id": "99"}}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["edited_arguments"] == {"order_id": "99"}
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"
    assert tool_results(model) == ["order 99: shipped"]


def test_a_denial_reaches_the_model_and_the_run_goes_on(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
        resp = c.post(f"/api/approvals/{approval['id']}/deny", json={"reason": "not today"})
        assert resp.status_code == 200, resp.text
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"
    (result,) = tool_results(model)
    assert "denied by approver: not today" in result
    assert "shipped" not in result


def test_never_refuses_without_pausing_and_workflow_rules_come_first(
    env: Env, model: ProtocolServer
) -> None:
    # The workflow says never for lookup_order; the agent would ask: the workflow's rule wins.
    workflow = make_workflow(
        env,
        agent_policy=ASK_LOOKUP,
        workflow_policy={"rules": [{"tool": "lookup_*", "action": "never"}]},
    )
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"
        assert c.get("/api/approvals", params={"task_id": task_id, "status": "all"}).json() == []
    (result,) = tool_results(model)
    assert "refused by policy" in result and "workflow rule 0" in result


def test_argument_patterns_select_the_calls_that_ask(env: Env, model: ProtocolServer) -> None:
    policy = {"rules": [{"server": "nope", "action": "never"},
                        {"tool": "lookup_order", "args": {"order_id": "^9"}, "action": "ask"}]}  # fmt: skip
    workflow = make_workflow(env, agent_policy=policy)
    lookup_then_answer(model, "42")  # does not match ^9: runs without asking
    with env.client() as c:
        first = start_run(c, workflow)
        assert wait_status(c, first, {"completed", "failed"})["status"] == "completed"
        lookup_then_answer(model, "977")
        second = start_run(c, workflow)
        assert wait_status(c, second, {"awaiting_approval", "completed"})["status"] == (
            "awaiting_approval"
        )
        c.post(f"/api/approvals/{pending_approval(c, second)['id']}/approve")
        assert wait_status(c, second, {"completed", "failed"})["status"] == "completed"
    assert tool_results(model) == ["order 42: shipped", "order 977: shipped"]


def test_a_chat_turn_cannot_wait_so_ask_is_refused_there(env: Env, model: ProtocolServer) -> None:
    agent = agent_of(env, make_workflow(env, agent_policy=ASK_LOOKUP))
    lookup_then_answer(model)
    with env.client() as c:
        with c.stream("POST", f"/api/agents/{agent}/chat", json={"message": "order 42?"}) as r:
            assert r.status_code == 200
            body = "".join(r.iter_text())
        assert "all done" in body
        assert c.get("/api/approvals", params={"status": "all"}).status_code == 200
    (result,) = tool_results(model)
    assert "needs a person's approval" in result and "run it in a workflow" in result


# --- the signed link ----------------------------------------------------------------------------
def test_the_signed_link_decides_once_without_an_api_key(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        link = pending_approval(c, task_id)["links"]["decide_url"]
    with httpx.Client(base_url=env.url, timeout=30) as anonymous:
        page = anonymous.get(link)
        assert page.status_code == 200, page.text
        assert "lookup_order" in page.text and "Approve" in page.text and "42" in page.text
        forged = anonymous.post(link[:-4] + "AAAA", data={"decision": "approve"})
        assert forged.status_code == 403, forged.text
        assert anonymous.get(link.replace("?token=", "/x?token=")).status_code in (404, 405)
        decided = anonymous.post(link, data={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        assert decided.json()["decided_by"] == "signed link"
        again = anonymous.post(link, data={"decision": "deny"})
        assert again.status_code == 409, again.text
        assert "Already decided" in anonymous.get(link).text
    with env.client() as c:
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"
    assert tool_results(model) == ["order 42: shipped"]


# --- timeout ----------------------------------------------------------------------------------
def test_an_unanswered_approval_expires_as_a_denial(env: Env, model: ProtocolServer) -> None:
    policy = {**ASK_LOOKUP, "timeout_seconds": 1}
    workflow = make_workflow(env, agent_policy=policy)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"
        (approval,) = c.get("/api/approvals", params={"task_id": task_id, "status": "all"}).json()
        assert approval["status"] == "expired"
        late = c.post(f"/api/approvals/{approval['id']}/approve")
        assert late.status_code == 409, late.text
    (result,) = tool_results(model)
    assert "expired" in result and "denied" in result


def test_on_timeout_fail_fails_the_run(env: Env, model: ProtocolServer) -> None:
    policy = {**ASK_LOOKUP, "timeout_seconds": 1, "on_timeout": "fail"}
    workflow = make_workflow(env, workflow_policy=policy)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        failed = wait_status(c, task_id, {"completed", "failed"})
    assert failed["status"] == "failed"
    assert "on_timeout is `fail`" in failed["error"]
    assert tool_results(model) == []


# --- webhook, validation, ownership -------------------------------------------------------------
def test_a_workflow_webhook_gets_an_approval_requested_delivery(
    env: Env, model: ProtocolServer
) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP, webhook_url="http://127.0.0.1:9/hook")
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
        deliveries = c.get(f"/api/tasks/{task_id}/webhook-deliveries").json()
        assert [d["event"] for d in deliveries] == [f"approval_requested/{approval['id']}"]
        c.post(f"/api/approvals/{approval['id']}/deny")
        wait_status(c, task_id, {"completed", "failed"})


def test_a_bad_policy_is_refused_naming_the_rule(env: Env) -> None:
    with env.client() as c:
        bad_regex = c.post(
            "/api/agents",
            json={"name": "bad", "tool_policy": {"rules": [
                {"tool": "x", "action": "ask"}, {"args": {"path": "(["}, "action": "ask"}]}},
        )  # fmt: skip
        assert bad_regex.status_code == 422, bad_regex.text
        assert "tool_policy.rules.1.args" in bad_regex.text
        bad_action = c.post(
            "/api/agents",
            json={"name": "bad", "tool_policy": {"rules": [{"tool": "x", "action": "maybe"}]}},
        )
        assert bad_action.status_code == 422 and "tool_policy.rules.0.action" in bad_action.text
        bad_timeout = c.post(
            "/api/agents", json={"name": "bad", "tool_policy": {"on_timeout": "explode"}}
        )
        assert bad_timeout.status_code == 422 and "on_timeout" in bad_timeout.text
        good = c.post("/api/agents", json={"name": "ok", "tool_policy": ASK_LOOKUP})
        assert good.status_code == 201, good.text
        assert good.json()["tool_policy"]["rules"][0]["action"] == "ask"
        assert c.post("/api/agents", json={"name": "none"}).json()["tool_policy"] is None


def test_only_the_owner_sees_and_decides(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    stranger = env.key(f"stranger-{uuid.uuid4().hex[:6]}")
    with env.client() as c, env.client(stranger) as other:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
        assert other.get("/api/approvals").json() == []
        assert other.get(f"/api/approvals/{approval['id']}").status_code == 404
        assert other.post(f"/api/approvals/{approval['id']}/approve").status_code == 404
        assert c.get("/api/approvals", params={"status": "bogus"}).status_code == 422
        c.post(f"/api/approvals/{approval['id']}/approve")
        assert wait_status(c, task_id, {"completed", "failed"})["status"] == "completed"


def test_halting_a_waiting_run_ends_it(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with env.client() as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
        assert c.post(f"/api/tasks/{task_id}/halt").json()["result"] == "halted"
        assert wait_status(c, task_id, {"halted"})["status"] == "halted"
        late = c.post(f"/api/approvals/{approval['id']}/approve")
        assert late.status_code == 409 and "halted" in late.text


# --- durability ---------------------------------------------------------------------------------
def test_a_waiting_run_survives_a_server_restart(env: Env, model: ProtocolServer) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    settings = approval_settings(env.data_dir, env.postgres_uri)
    with live_server(settings) as first, env.client(url=first) as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        approval = pending_approval(c, task_id)
    # The first server is gone; a new one on the same database takes the decision.
    with live_server(settings) as second, env.client(url=second) as c:
        assert c.post(f"/api/approvals/{approval['id']}/approve").status_code == 200
        done = wait_status(c, task_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert tool_results(model) == ["order 42: shipped"]


def test_a_link_sent_before_a_key_rotation_still_decides(env: Env, model: ProtocolServer) -> None:
    """Rotating TOKEN_ENCRYPTION_KEY (a newer version in front of the old one) keeps the links
    already sent working; a ring without the version that signed a link refuses it (403)."""
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    old = approval_settings(env.data_dir, env.postgres_uri)
    with live_server(old) as first, env.client(url=first) as c:
        task_id = start_run(c, workflow)
        wait_status(c, task_id, {"awaiting_approval"})
        link = pending_approval(c, task_id)["links"]["decide_url"]
    newest = f"2:{generate_fernet_key()}"
    without_old = approval_settings(env.data_dir, env.postgres_uri, token_encryption_key=newest)
    with live_server(without_old) as second, httpx.Client(base_url=second, timeout=30) as anon:
        refused = anon.post(link, data={"decision": "approve"})
        assert refused.status_code == 403, refused.text
        assert "no longer in the server's key ring" in refused.text
    rotated = approval_settings(
        env.data_dir, env.postgres_uri, token_encryption_key=f"{newest},{FERNET}"
    )
    with live_server(rotated) as third:
        with env.client(url=third) as c:
            fresh = pending_approval(c, task_id)["links"]["decide_url"]
        assert fresh != link  # new links are signed with the newest version
        with httpx.Client(base_url=third, timeout=30) as anonymous:
            decided = anonymous.post(link, data={"decision": "approve"})
            assert decided.status_code == 200, decided.text
        with env.client(url=third) as c:
            done = wait_status(c, task_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert tool_results(model) == ["order 42: shipped"]


@contextmanager
def server_process(env: Env) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.approval_proc", str(env.data_dir),
         env.postgres_uri, str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=2) as probe:
            while True:
                try:
                    if probe.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.poll() is None, "the server process exited"
                    assert time.monotonic() < deadline, "the server process did not listen"
                    time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_waiting_run_survives_a_kill_of_the_process_that_ran_it(
    env: Env, model: ProtocolServer
) -> None:
    workflow = make_workflow(env, agent_policy=ASK_LOOKUP)
    lookup_then_answer(model)
    with server_process(env) as (proc, url):
        with env.client(url=url) as c:
            task_id = start_run(c, workflow)
            paused = wait_status(c, task_id, {"awaiting_approval"})
        assert paused["worker"] is None
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    # Another process (the module's server) approves; the run resumes there and completes.
    with env.client() as c:
        approval = pending_approval(c, task_id)
        assert c.post(f"/api/approvals/{approval['id']}/approve").status_code == 200
        done = wait_status(c, task_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert tool_results(model) == ["order 42: shipped"]

"""Workflow runs on a repository checkout, through the real engine: the runtime starts the run,
the executor syncs the private repository (git-http-backend behind Basic auth), and a scripted
model (OpenAI and Anthropic wire formats) calls read / grep / edit / bash on it. The repository
token must appear nowhere a user, a tool or an operator's disk could see it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, CustomTool, Provider, Token, Workflow
from tbd_agents.engine.workspace import WorkspaceConfig, checkout_path
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services import approvals
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.engine.git_server import GitServer, Repo, all_files_text, make_repo
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.test_workspace import TOKEN, secret_forms
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"
ENV_TOOL = "import os\ndef run():\n    return dict(os.environ)\n"


@pytest.fixture(scope="module")
def ws_db(pg18_server: str):
    url = pg.create_migrated_database(pg18_server, prefix="wsr")
    yield url
    pg.drop_database(url)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = make_repo(tmp_path / "srv", "project")
    r.commit({"README.md": "hello from the repo\n", "src/app.py": "print('v1')\n"}, "first")
    return r


@pytest.fixture
def git_server(repo: Repo) -> Iterator[GitServer]:
    srv = GitServer(repo.bare.parent, TOKEN).start()
    yield srv
    srv.stop()


@pytest.fixture
async def runtime(ws_db, tmp_path: Path) -> AsyncIterator[tuple[Runtime, PostgresStore, Settings]]:
    settings = Settings(
        postgres_uri=ws_db.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        data_dir=tmp_path / "data",
        allow_user_custom_tools=True,
        outbound_allowed_hosts="127.0.0.1",  # the scripted model and the git server
        repo_allow_insecure_urls=True,  # the test git server speaks http://
        workspace_retention_hours=1.0,  # a checkout used within the hour is never pruned
        redis_url=None,
        # the default lease (30 s): with 5 s a run on a loaded machine once lost its lease
        # mid-run (no heartbeat for 5 s) and was failed; nothing here is about leases
    )
    engine = create_engine(ws_db, application_name="workspace-run-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield rt, store, settings
    await rt.aclose(drain_seconds=5)
    await engine.dispose()


async def seed(
    store: PostgresStore, settings: Settings, kind: str, model_url: str, repo_url: str,
    token_name: str | None = "repo-pat", tool_policy: dict[str, Any] | None = None,
) -> Workflow:  # fmt: skip
    cipher = KeyRingProvider(settings).cipher()
    suffix = uuid.uuid4().hex[:8]
    async with store.unit_of_work() as repos:
        existing = {t.name for t in (await repos.tokens.list()).items}
        for name, secret in (("model-key", "sk-model-key"), ("repo-pat", TOKEN)):
            if name not in existing:
                value, version = cipher.encrypt(secret)
                await repos.tokens.create(
                    Token(name=name, encrypted_value=value, key_version=version, created_by="alice")
                )
        provider = await repos.providers.create(
            Provider(
                name=f"p-{kind}-{suffix}",
                provider_type=ProviderType(kind),
                api_key_token_name="model-key",
                base_url=f"{model_url}/v1" if kind == "openai" else model_url,
                created_by="alice",
            )
        )
        tool = await repos.custom_tools.create(
            CustomTool(name="envdump", source_code=ENV_TOOL, created_by="alice",
                       parameters_schema={"type": "object", "properties": {}})
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(
                name=f"coder-{kind}-{suffix}", model="m-1", provider_id=provider.id, created_by="alice",
                builtin_tools=["read", "grep", "edit", "bash"], custom_tool_ids=[tool.id],
                tool_policy=tool_policy,
            )
        )  # fmt: skip
        return await repos.workflows.create(
            Workflow(
                agent_id=agent.id, title="wf", github_user="alice", max_turns=10,
                repo_url=repo_url, repo_token_name=token_name,
            )
        )  # fmt: skip


async def run(rt: Runtime, wf: Workflow, prompt: str) -> tuple[Any, list[Any]]:
    task = await rt.start_run(wf.id, prompt)

    async def gather() -> list[Any]:
        return [e async for e in rt.follow(task.id, 0)]

    events = await asyncio.wait_for(gather(), 90)
    return await leases.load(rt.db, task.id), events


def logs_of(events: list[Any], name: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == "log" and e.data.get("event") == name]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_agent_reads_greps_edits_and_runs_bash_on_the_checkout(
    kind: str, runtime, protocol_server: ProtocolServer, repo: Repo, git_server: GitServer,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(store, settings, kind, protocol_server.url, f"{git_server.url}/project.git")
    protocol_server.script(
        Turn(tool_calls=[("read", {"path": "README.md"}),
                         ("grep", {"pattern": r"print\(", "glob": "*.py"})]),
        Turn(tool_calls=[
            ("edit", {"path": "README.md", "old_string": "hello", "new_string": "edited"}),
        ]),
        Turn(tool_calls=[("bash", {"command": "cat README.md; env; ls -a"}), ("envdump", {})]),
        Turn(text="done"),
    )  # fmt: skip
    row, events = await run(rt, wf, "Look at the repository")
    assert row.status is TaskStatus.COMPLETED, row.error
    synced = logs_of(events, "repo_synced")
    assert len(synced) == 1 and synced[0]["branch"] == "trunk" and len(synced[0]["commit"]) == 40
    checkout = Path(synced[0]["path"])
    assert checkout.is_relative_to(tmp_path / "data" / "workspaces")
    assert (checkout / "README.md").read_text() == "edited from the repo\n"
    results = {e.data["name"]: e.data["content"] for e in events if e.type == "tool_result"}
    assert "hello from the repo" in results["read"]
    assert results["grep"] == "src/app.py:1: print('v1')"
    assert "edited from the repo" in results["bash"] and "src" in results["bash"]
    assert "TBD_AGENTS_REPO_ROOT" not in results["envdump"]  # the sandbox hides the checkout
    first = protocol_server.requests[0].all_text()
    assert "## Repository" in first and f"{git_server.url}/project.git" in first
    # the repository token is nowhere
    async with store.unit_of_work() as repos:
        workflow = await repos.workflows.get(wf.id)
    places = {
        "events": json.dumps([e.data for e in events], default=str),
        "task": row.model_dump_json(),
        "workflow": workflow.model_dump_json(),
        "files": all_files_text(tmp_path / "data"),
        "logs": caplog.text,
        "model requests": json.dumps([r.body for r in protocol_server.requests]),
    }
    for secret in secret_forms():
        for where, text in places.items():
            assert secret not in text, where

    # the next run syncs the new upstream commit (and drops the agent's edit)
    repo.commit({"README.md": "second version\n"}, "second")
    protocol_server.script(Turn(tool_calls=[("read", {"path": "README.md"})]), Turn(text="ok"))
    row, events = await run(rt, wf, "again")
    assert row.status is TaskStatus.COMPLETED
    assert logs_of(events, "repo_synced")[0]["commit"] != synced[0]["commit"]
    read = next(e.data["content"] for e in events if e.type == "tool_result")
    assert "second version" in read


async def _until_status(rt: Runtime, task_id: str, wanted: set[TaskStatus]) -> Any:
    for _ in range(600):
        row = await leases.load(rt.db, task_id)
        if row.status in wanted:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {task_id} stayed {row.status}")


@pytest.mark.parametrize("checkout", ["kept", "deleted during the pause"])
async def test_a_run_resumed_after_an_approval_keeps_its_edits_in_the_checkout(
    checkout: str, runtime, protocol_server: ProtocolServer, repo: Repo, git_server: GitServer
) -> None:
    """The agent edits a file, then its bash call waits for approval. Meanwhile upstream moves
    on. After the approval the run goes on in the checkout as it left it: the edit is there and
    the upstream commit is not fetched (old code synced again: fetch, hard reset, clean). A
    checkout that is gone by then is synced again, with a warning that the edits are lost."""
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(
        store, settings, "openai", protocol_server.url, f"{git_server.url}/project.git",
        tool_policy={"rules": [{"tool": "bash", "action": "ask"}]},
    )  # fmt: skip
    protocol_server.script(
        Turn(tool_calls=[
            ("edit", {"path": "README.md", "old_string": "hello", "new_string": "edited"}),
        ]),
        Turn(tool_calls=[("bash", {"command": "cat README.md; git log --oneline | wc -l"})]),
        Turn(text="done"),
    )  # fmt: skip
    task = await rt.start_run(wf.id, "edit, then show")
    await _until_status(rt, task.id, {TaskStatus.AWAITING_APPROVAL})
    repo.commit({"README.md": "upstream moved on\n"}, "second")
    root = WorkspaceConfig.from_settings(settings).root
    path = checkout_path(root, wf.id, f"{git_server.url}/project.git")
    assert (path / "README.md").read_text() == "edited from the repo\n"
    if checkout == "kept":  # the wait outlasted WORKSPACE_RETENTION_HOURS: resuming keeps it
        two_hours_ago = time.time() - 7200
        os.utime(path, (two_hours_ago, two_hours_ago))
    else:
        shutil.rmtree(path)
    async with store.unit_of_work() as repos:
        (pending,) = (
            await repos.for_model(ToolApproval).list(Query(filters=[eq("task_id", task.id)]))
        ).items
    decided = await approvals.decide(store, pending, approve=True, by="alice")
    assert await rt.approval_decided(task.id, {"approval_id": decided.id, "status": "approved"})
    row = await _until_status(rt, task.id, {TaskStatus.COMPLETED, TaskStatus.FAILED})
    assert row.status is TaskStatus.COMPLETED, row.error
    events = [e async for e in rt.follow(task.id, 0)]
    kept, synced = logs_of(events, "repo_kept"), logs_of(events, "repo_synced")
    bash = [
        e.data["content"] for e in events if e.type == "tool_result" and e.data["name"] == "bash"
    ]
    if checkout == "kept":
        assert len(synced) == 1 and len(kept) == 1  # synced before the pause only
        assert kept[0]["commit"] == synced[0]["commit"]
        assert bash and "edited from the repo" in bash[-1] and "upstream" not in bash[-1], bash
        assert bash[-1].split()[-1] == "1"  # still the first commit
    else:
        assert not kept and len(synced) == 2
        (lost,) = logs_of(events, "repo_sync_failed")
        assert "earlier changes are lost" in lost["message"]
        assert bash and "upstream moved on" in bash[-1], bash


async def test_a_failed_sync_is_logged_and_the_run_goes_on(
    runtime, protocol_server: ProtocolServer, git_server: GitServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(store, settings, "openai", protocol_server.url,
                    f"{git_server.url}/project.git", token_name=None)  # fmt: skip
    protocol_server.script(Turn(tool_calls=[("bash", {"command": "ls -a; pwd"})]), Turn(text="ok"))
    row, events = await run(rt, wf, "no access")
    assert row.status is TaskStatus.COMPLETED
    failed = logs_of(events, "repo_sync_failed")
    assert len(failed) == 1 and "git clone failed" in failed[0]["reason"]
    assert any(e["event"] == "repo_sync_failed" for e in row.logs)
    assert "## Repository" not in protocol_server.requests[0].all_text()
    # the tools got the workflow's (empty) scratch directory instead
    bash = next(e.data["content"] for e in events if e.type == "tool_result")
    assert bash.startswith("exit code 0") and "README.md" not in bash

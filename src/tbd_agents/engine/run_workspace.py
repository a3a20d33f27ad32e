"""Preparing the workspace of one run (called by engine/inprocess.py before the agent loop).

- A workflow with `repo_url`: its repository is synced (engine/workspace.py) with the token
  named by `repo_token_name` (a token of the workflow's owner, resolved like every
  `{{token:NAME}}`), then the run logs `repo_synced` (path, commit, branch). A failed sync logs
  `repo_sync_failed` with the reason and the run goes on without the repository (the existing
  TBD Agents logged a warning and continued): its file tools then get the scratch directory.
  A run resumed after an approval keeps the checkout as it left it (`repo_kept`): the edits it
  made before the pause are what the approved call acts on. (A checkout is per workflow: another
  run of the same workflow during the pause syncs it, as it would between any two runs.)
- Otherwise, when the agent lists a workspace tool (bash, read, write, edit, glob, grep), a
  scratch directory: one per workflow (kept between its runs, like a checkout) or per chat
  session. WORKSPACE_RETENTION_HOURS > 0 prunes workspaces unused for that long, here before
  each preparation (and `prune_workspaces` is there for a scheduler to call).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tbd_agents.domain.models import Agent, Workflow
from tbd_agents.engine.tools.files import FILE_TOOLS
from tbd_agents.engine.workspace import (
    Workspace,
    WorkspaceConfig,
    chown_tree,
    prune_workspaces,
    reuse_checkout,
    scratch_workspace,
    sync_repository,
)
from tbd_agents.errors import TbdError
from tbd_agents.runtime.contracts import EventSink, EventType
from tbd_agents.security.outbound import HostPolicy, OutboundGuard
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.tokens import resolve_tree

log = logging.getLogger(__name__)

NEEDS_DIRECTORY = frozenset({"bash", *FILE_TOOLS})


def needs_directory(agent: Agent) -> bool:
    return any(name.strip().lower() in NEEDS_DIRECTORY for name in agent.builtin_tools)


async def _scratch(
    config: WorkspaceConfig, kind: str, key: str, owner: tuple[int, int] | None
) -> Workspace:
    ws = await asyncio.to_thread(scratch_workspace, config.root, kind, key)
    if owner is not None:
        await asyncio.to_thread(chown_tree, ws.path, *owner)
    return ws


async def _log(sink: EventSink, event: str, message: str, **data: Any) -> None:
    level = "warning" if event == "repo_sync_failed" else "info"
    await sink.emit(EventType.LOG, {"level": level, "event": event, "message": message, **data})


async def prepare_workspace(
    services: Any, agent: Agent, workflow: Workflow, sink: EventSink, *, resuming: bool = False
) -> Workspace | None:
    """The workspace of a run of `workflow` (None when the run needs none). `services`: the
    engine's EngineServices. `resuming`: the run goes on after an approval, in the checkout
    as it left it (no fetch, no reset: its edits before the pause are kept)."""
    config: WorkspaceConfig = services.config.workspace
    owner = services.sandbox.confiner.drop
    # Before the pruning below: the wait for an approval may have outlasted the retention.
    kept = None
    if workflow.repo_url and resuming:
        kept = await reuse_checkout(config, workflow.id, workflow.repo_url)
    if config.retention_hours > 0:
        removed = await asyncio.to_thread(prune_workspaces, config.root, config.retention_hours)
        if removed:
            log.info("pruned %d workspaces unused for %g h", len(removed), config.retention_hours)
    if workflow.repo_url and resuming:
        if kept is not None:
            await _log(
                sink, "repo_kept",
                f"resumed in {kept.path} as the run left it ({kept.branch} at "
                f"{(kept.commit or '')[:12]}, not synced again)",
                path=str(kept.path), commit=kept.commit, branch=kept.branch,
            )  # fmt: skip
            return kept
        await _log(
            sink, "repo_sync_failed",
            "the checkout this run worked in before its pause is gone (deleted, or pruned by "
            "WORKSPACE_RETENTION_HOURS while no run used it): syncing again, its earlier "
            "changes are lost",
            reason="checkout missing on resume",
        )  # fmt: skip
    if workflow.repo_url:
        try:
            ws = await _sync(services, workflow, config, owner)
        except TbdError as exc:
            await _log(sink, "repo_sync_failed", f"{workflow.repo_url}: {exc.message}",
                       reason=exc.message)  # fmt: skip
        else:
            await _log(
                sink, "repo_synced",
                f"{ws.repo_url} ({ws.branch} at {(ws.commit or '')[:12]}) in {ws.path}",
                path=str(ws.path), commit=ws.commit, branch=ws.branch,
            )  # fmt: skip
            return ws
    if not needs_directory(agent):
        return None
    return await _scratch(config, "workflow", workflow.id, owner)


async def _sync(
    services: Any, workflow: Workflow, config: WorkspaceConfig, owner: tuple[int, int] | None
) -> Workspace:
    outbound: OutboundGuard = services.outbound or OutboundGuard(HostPolicy(), AdminDirectory())
    async with services.store.unit_of_work() as repos:
        token = None
        if workflow.repo_token_name:
            ref = "{{token:" + workflow.repo_token_name + "}}"
            token = await resolve_tree(repos, services.cipher, workflow.github_user, ref)
        policy = await outbound.policy_for(repos, workflow.github_user)
    assert workflow.repo_url is not None
    return await sync_repository(
        config, workflow.id, workflow.repo_url, workflow.repo_branch or None, token, policy,
        owner=owner,
    )  # fmt: skip


async def chat_workspace(services: Any, agent: Agent, session_id: str | None) -> Workspace | None:
    """The scratch directory of a chat session, when the agent lists a workspace tool."""
    if not needs_directory(agent):
        return None
    config: WorkspaceConfig = services.config.workspace
    key = session_id or f"agent:{agent.id}"
    return await _scratch(config, "chat", key, services.sandbox.confiner.drop)

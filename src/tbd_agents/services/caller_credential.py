"""The caller's GitHub token on its way from the API to the worker that runs a workflow prompt.

An agent without provider_id runs on GitHub Copilot with the GitHub token of the caller who
started the run (engine/default_provider.py). A workflow run is executed later, possibly by
another process, so the token travels on the task: `TaskExecution.caller_credential`, encrypted
with the server's token cipher (never in plaintext: the existing system kept it in Redis as it
was), set before the run is dispatched, only for runs that may use it, and cleared when the run
ends. The field is excluded from every serialization of the task (API answers, webhooks,
exports).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.engine.default_provider import caller_github_token
from tbd_agents.errors import NotFound, TbdError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.storage.protocol import DocumentStore

if TYPE_CHECKING:
    from tbd_agents.runtime.service import Runtime

log = logging.getLogger(__name__)


async def _needs_caller_token(store: DocumentStore, workflow: Workflow) -> bool:
    """The workflow's agent runs on the default model (no provider_id of its own)."""
    async with store.unit_of_work(readonly=True) as repos:
        try:
            agent: Agent = await repos.agents.get(workflow.agent_id)
        except NotFound:
            return False
    return not agent.provider_id


async def start_run_as_caller(
    runtime: Runtime,
    store: DocumentStore,
    cipher: TokenCipher,
    workflow: Workflow,
    prompt: str,
    *,
    github_token: str | None,
    reasoning_effort: str | None = None,
) -> TaskExecution:
    """`runtime.start_run`, with the caller's GitHub token sealed on the task first when the
    workflow's agent has no provider_id (any other run never stores it)."""
    if not github_token or not await _needs_caller_token(store, workflow):
        return await runtime.start_run(workflow.id, prompt, reasoning_effort=reasoning_effort)
    task = await runtime.runs.create_run(workflow.id, prompt, reasoning_effort=reasoning_effort)
    sealed, _ = cipher.encrypt(github_token)
    async with store.unit_of_work() as repos:
        await repos.task_executions.update(task.id, {"caller_credential": sealed})
    await runtime.dispatch(task.id)
    return task


@asynccontextmanager
async def caller_credential_of(
    store: DocumentStore, cipher: TokenCipher, task: TaskExecution
) -> AsyncIterator[None]:
    """Runs inside may use the task's caller token (engine/default_provider.py); when the
    block ends (the run ended, however) the sealed token is removed from the task."""
    if not task.caller_credential:
        yield
        return
    try:
        token: str | None = cipher.decrypt(task.caller_credential)
    except TbdError as exc:  # a key rotated away: the run falls back to the other defaults
        log.warning("run %s: the caller's GitHub token is unreadable: %s", task.id, exc.message)
        token = None
    try:
        with caller_github_token(token):
            yield
    finally:
        try:
            async with store.unit_of_work() as repos:
                await repos.task_executions.update(task.id, {"caller_credential": None})
        except Exception:  # the run's own outcome matters more; the runtime clears it at its end
            log.exception("run %s: removing the caller's sealed token failed", task.id)

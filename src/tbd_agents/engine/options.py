"""The options of a workflow run (`RunOptions`) and what each one changes in the engine.

The existing TBD Agents kept these on the workflow; here they are read once per run
(`RunOptions.of_workflow`) and carried on the `RunSpec`. Chat turns use the defaults (a chat
session has no workflow); a schedule-fired run is a workflow run and gets its workflow's options.

- `caveman`: a terse-answer policy in the system prompt, and knowledge passages and memories
  compressed by `engine.compress` before they are injected.
- `tsv_tool_results`: tabular JSON tool results are fed back to the model as TSV (`engine.tsv`).
- `bypass_memory`: the run gets no memory store at all — nothing recalled into the prompt, and no
  memory built-ins (`store_memory`, `search_memory`) even when the agent lists them.
- `auto_memory`: a policy asking the model to store up to three durable facts, and `store_memory`
  offered although the agent does not list it (when memory is available and not bypassed).
- `infinite_session`: true → the run may last up to ENGINE_INFINITE_SESSION_TIMEOUT (24 h);
  false → SESSION_TIMEOUT (600 s) bounds the whole run, which then fails "session timeout"
  (`Deadline`). Compaction follows COMPACTION_ENABLED either way (see docs/engine.md).
- `reasoning_effort`: passed to providers whose model supports it (`ChatRequest`): OpenAI's
  `reasoning_effort` for reasoning models, Anthropic extended thinking for thinking models.
- `credential_overrides`: per-run replacement of custom tools' declared env variables by the
  workflow owner's tokens (`apply_credential_overrides`).
- `todo_tool`: offer `manage_todo_list` though the agent does not list it (workflow runs, by
  ENGINE_WORKFLOW_TODO_TOOL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.models import Workflow
from tbd_agents.engine.catalog import ModelInfo

#: The terse-answer policy of `caveman` (our wording of the existing `<caveman_policy>`).
CAVEMAN_POLICY = (
    "## Answer style\nBe terse. Give the answer, not the story: no preamble, no restating the "
    "question, no pleasantries, no closing summary. Short sentences or fragments; bullet points "
    "over paragraphs. Keep every fact, number, name, command and citation the answer needs."
)

#: The policy of `auto_memory` (our wording of the existing `<auto_memory_policy>`).
AUTO_MEMORY_POLICY = (
    "## Memory\nBefore you finish, store durable facts worth knowing in later runs (stable "
    "preferences, decisions, names, identifiers) with the `store_memory` tool: at most 3 calls, "
    "short snake_case keys, scope `agent`. Do not store secrets or facts that only matter to "
    "this run."
)

EFFORTS = ("low", "medium", "high")
log = logging.getLogger(__name__)
#: Models a reasoning effort was dropped for (logged once each per process).
_EFFORT_IGNORED: set[str] = set()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a workflow asks of its runs (the defaults: a chat turn, or a workflow that asks
    nothing special)."""

    caveman: bool = False
    tsv_tool_results: bool = False
    bypass_memory: bool = False
    auto_memory: bool = False
    infinite_session: bool = True
    reasoning_effort: str | None = None
    credential_overrides: Mapping[str, str] = field(default_factory=dict)
    #: Whose tokens `credential_overrides` name (the workflow's `github_user`).
    credential_owner: str | None = None
    todo_tool: bool = False

    @classmethod
    def of_workflow(
        cls,
        workflow: Workflow,
        *,
        reasoning_effort: str | None = None,
        todo_tool: bool = False,
    ) -> RunOptions:
        """The options of a run of `workflow`; `reasoning_effort` is the run's own (a prompt's
        override), else the workflow's."""
        return cls(
            caveman=workflow.caveman,
            tsv_tool_results=workflow.tsv_tool_results,
            bypass_memory=workflow.bypass_memory,
            auto_memory=workflow.auto_memory,
            infinite_session=workflow.infinite_session,
            reasoning_effort=normal_effort(reasoning_effort or workflow.reasoning_effort),
            credential_overrides=dict(workflow.credential_overrides),
            credential_owner=workflow.github_user,
            todo_tool=todo_tool,
        )

    def policies(self) -> list[str]:
        """The system-prompt sections these options add (after the skills)."""
        out: list[str] = []
        if self.caveman:
            out.append(CAVEMAN_POLICY)
        if self.auto_memory and not self.bypass_memory:
            out.append(AUTO_MEMORY_POLICY)
        return out

    def effort_for(self, model: ModelInfo) -> str | None:
        """The reasoning effort to send for `model`: only reasoning models of the catalog
        (`reasoning = true`) take one; for others it is dropped with one log line per model."""
        if self.reasoning_effort is None:
            return None
        if model.reasoning:
            return self.reasoning_effort
        if model.thinking:  # sent as a thinking budget instead (`thinking_for`)
            return None
        if model.name not in _EFFORT_IGNORED:
            _EFFORT_IGNORED.add(model.name)
            log.info(
                "reasoning_effort %s ignored for model %r: the model catalog does not mark it as "
                "a reasoning model (reasoning = true) or a thinking model (thinking = true in "
                "ENGINE_MODEL_CATALOG)",
                self.reasoning_effort,
                model.name,
            )
        return None

    def thinking_for(self, model: ModelInfo) -> str | None:
        """The effort to spend on extended thinking for `model` (catalog `thinking = true`):
        the Anthropic provider turns it into `thinking.budget_tokens` (engine/thinking.py)."""
        return self.reasoning_effort if model.thinking else None

    def builtin_names(self, listed: list[str], memory_available: bool) -> list[str]:
        """The built-ins a run offers: the agent's (without the memory ones under
        `bypass_memory`: a deliberate choice, not a missing store to warn about), plus
        `store_memory` for `auto_memory` and `manage_todo_list` for `todo_tool`."""
        memory_names = {"store_memory", "search_memory", "memory"}
        names = [
            n for n in listed if not (self.bypass_memory and n.strip().lower() in memory_names)
        ]
        lowered = {n.strip().lower() for n in names}
        if self.auto_memory and memory_available and not lowered & {"store_memory", "memory"}:
            names.append("store_memory")
        todo_names = {"manage_todo_list", "update_todos", "todo", "todos"}
        if self.todo_tool and not lowered & todo_names:
            names.append("manage_todo_list")
        return names


def normal_effort(value: str | None) -> str | None:
    """`low` / `medium` / `high` (case and spaces ignored); anything else: None."""
    if value is None:
        return None
    effort = value.strip().lower()
    return effort if effort in EFFORTS else None


class SessionTimeout(Exception):
    """The run went past its session bound (`Deadline`)."""


class Deadline:
    """A HaltSignal that fires when the user halts the run or its session time is up.

    The loop races every model call and tool call against `wait()`, so the deadline stops work
    in flight exactly as a halt does; `expired` tells the caller it was the clock."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.ends and not (
            self.inner is not None and self.inner.is_set()
        )

    def is_set(self) -> bool:
        return time.monotonic() >= self.ends or (self.inner is not None and self.inner.is_set())

    async def wait(self) -> None:
        sleeper = asyncio.ensure_future(asyncio.sleep(max(0.0, self.ends - time.monotonic())))
        waiters = {sleeper}
        if self.inner is not None:
            waiters.add(asyncio.ensure_future(self.inner.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


def timeout_message(seconds: float, infinite: bool) -> str:
    """The error of a run stopped by its session bound, naming the setting to change."""
    if infinite:
        return (
            f"session timeout: the run exceeded {seconds:g} s, the longest an "
            "infinite_session run may last (ENGINE_INFINITE_SESSION_TIMEOUT)"
        )
    return (
        f"session timeout: the run exceeded SESSION_TIMEOUT ({seconds:g} s), the bound of a "
        "workflow with infinite_session=false; raise SESSION_TIMEOUT or set infinite_session=true"
    )

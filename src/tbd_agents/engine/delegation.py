"""Agents as tools of other agents (`Agent.agent_tool_ids`).

Every agent an agent lists is offered to its model as a tool (`AgentTool`) named after the
agent, with one required parameter `task` and an optional `context`. Calling it runs the called
agent (the child) through the same engine path as any run (`run_agent`: its own provider,
model, tools, knowledge, memory and guardrails) and returns the child's final answer as the
tool result.

The child run is a task execution of its own, linked to the run that called it
(`parent_task_id`, `root_task_id`, `delegation_depth`; `chat_session_id` when a chat turn
started the chain), with its own event log, lease and halt flag, so it is listed, followed and
halted like any run: its events are stored, then published on the process's event bus
(`EngineServices.bus`, the runtime's), so its followers see them live (engine/delegated_run.py).
It is executed inside the parent's tool call, not queued: a parent waiting for a queued child
could wait for ever for the worker slot it holds itself.

What a child inherits (`Chain`): what the person who started the chain set to govern everything
done on their behalf. From the workflow of a chain a workflow run started (`Chain.workflow`), at
every depth: its tool policy (checked before the child agent's; `ask` pauses the child in place
until decided, delegated_run.py), its guardrails (joining the child agent's; input ones redact
the task before the child is stored), its session bound (`infinite_session`) and
`bypass_memory` (`Chain.inherited_options`); and the usage attribution of the chain (user,
workflow, schedule, chat session). The child keeps its own agent's provider, model, reasoning
effort, tools, skills, knowledge, max_turns, answer style (caveman, TSV results, auto memory,
todo tool) and output format; the workflow's credential overrides stay with the workflow's
agent (they hand the workflow owner's tokens to that agent's custom tools). A chat turn's chain
passes down its session and user only, and, like the chat turn, cannot pause for approval.

What the parent's stream shows: `delegation_started {child_task_id, agent_id, agent_name, task,
depth}` before the child starts and `delegation_finished {child_task_id, agent_id, status,
usage, elapsed}` after it ended; the child's usage is added to the parent's (the `usage` of the
tool result, `loop.py`), while each of the child's model calls is recorded once in the usage
ledger, under the child's agent and task and the chain's user, workflow and session.

Limits, checked when the tool is called (an error result to the calling model; the run goes
on): the chain's depth (DELEGATION_MAX_DEPTH) and cycles (an agent already running in the
chain is never called again; saving a cycle is refused already, services/delegation.py, but
imported or concurrently edited data can still hold one). Halting the parent cancels its tool
calls, which ends the child as halted; a child that fails is an error result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.engine.context import RunSpec
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.options import RunOptions
from tbd_agents.engine.tools.base import ToolContext, ToolResult, safe_name

if TYPE_CHECKING:
    from tbd_agents.engine.inprocess import EngineServices

log = logging.getLogger(__name__)

#: The parameters of every agent tool.
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {
            "type": "string",
            "minLength": 1,
            "description": "What the agent should do, stated so it can work without this "
            "conversation: it does not see it.",
        },
        "context": {
            "type": "string",
            "description": "Facts, data or constraints the agent needs for the task.",
        },
    },
    "required": ["task"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class Chain:
    """Where a run sits in a delegation chain, and what its children inherit."""

    #: Ids of the agents running in the chain, the run's own agent last.
    agent_ids: tuple[str, ...] = ()
    #: Their names, for messages ("a → b → a").
    agent_names: tuple[str, ...] = ()
    #: 0: the run a user, a schedule or a webhook started; its children 1, theirs 2…
    depth: int = 0
    #: The run's own task execution (None: a chat turn or a preview).
    task_id: str | None = None
    #: The first task execution of the chain (None while the chain has none: a chat turn).
    root_task_id: str | None = None
    #: The workflow of the chain's first run (its children are listed with it).
    workflow_id: str | None = None
    #: The chat session of a chain a chat turn started.
    session_id: str | None = None
    #: Whom the chain's model calls are recorded and budgeted for.
    user_id: str | None = None
    #: The schedule that fired the chain's first run (its model calls are recorded under it).
    schedule_id: str | None = None
    #: The workflow of a chain a workflow run started: what every run of the chain inherits
    #: from it (`inherited_options`, its tool policy and guardrails; module docstring).
    workflow: Workflow | None = field(default=None, compare=False, repr=False)

    @classmethod
    def root(
        cls,
        agent: Agent,
        *,
        task: TaskExecution | None = None,
        workflow: Workflow | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> Chain:
        """The chain of a run an entry point started: a workflow run (`task`: the run's task
        execution, `workflow` its workflow) or a chat turn (`session_id`). (A delegated run is
        never started by an entry point: it is created running, by the call, and never
        queued.)"""
        return cls(
            agent_ids=(agent.id,),
            agent_names=(agent.name,),
            task_id=task.id if task is not None else None,
            root_task_id=task.id if task is not None else None,
            workflow_id=task.workflow_id if task is not None else None,
            session_id=session_id,
            user_id=user_id,
            schedule_id=task.scheduled_agent_id if task is not None else None,
            workflow=workflow,
        )

    @property
    def delegated(self) -> bool:
        """True for the chain of a delegated run (depth 1 and more)."""
        return self.depth > 0

    @property
    def can_pause(self) -> bool:
        """Whether the chain's runs may pause for a person's approval: a workflow's chain (a
        chat turn streams to a waiting client, and so do the runs it delegates to)."""
        return self.workflow is not None

    def inherited_options(self) -> RunOptions:
        """The workflow options a delegated run of the chain takes over (module docstring):
        the session bound and bypass_memory; the rest stays its own agent's (the defaults)."""
        workflow = self.workflow
        if workflow is None:
            return RunOptions()
        return RunOptions(
            infinite_session=workflow.infinite_session, bypass_memory=workflow.bypass_memory
        )

    def below(self, agent: Agent, task_id: str) -> Chain:
        """The chain of the child run `task_id` of `agent`."""
        return replace(
            self,
            agent_ids=(*self.agent_ids, agent.id),
            agent_names=(*self.agent_names, agent.name),
            depth=self.depth + 1,
            task_id=task_id,
            root_task_id=self.root_task_id or task_id,
        )


def tool_names(agents: list[Agent], taken: set[str]) -> list[str]:
    """A tool name per agent: the agent's name as providers accept tool names (letters,
    digits, `_`, `-`; at most 64; `agent_<id>` for a name without a Latin letter or digit),
    unique among `taken` and each other (numbered on a clash)."""
    names: list[str] = []
    used = set(taken)
    for agent in agents:
        base = safe_name(agent.name.strip().replace(" ", "_").lower())[:60]
        if not any(c.isascii() and c.isalnum() for c in base):  # a name in another script
            base = f"agent_{safe_name(agent.id)[:12]}"
        name, n = base, 2
        while name in used:
            name = f"{base}_{n}"
            n += 1
        used.add(name)
        names.append(name)
    return names


def add_agent_tools(
    spec: RunSpec, agents: list[Agent], services: EngineServices, chain: Chain
) -> None:
    """Offer each of `agents` to the run of `spec` as a tool (see the module docstring)."""
    for agent, name in zip(agents, tool_names(agents, set(spec.tools.tools)), strict=True):
        description = agent.description.strip() or f"Ask the agent {agent.name!r} to do a task."
        spec.tools.add(
            AgentTool(
                ToolSpec(
                    name,
                    f"{description}\n(Agent {agent.name!r}: give it a self-contained task; it "
                    "answers with its final result.)",
                    PARAMETERS,
                ),
                agent,
                services,
                chain,
                timeout=_timeout(services),
            )
        )


def _timeout(services: EngineServices) -> float:
    """The child bounds itself by its session time; the tool call waits a little longer, so
    the child's own timeout is the one reported."""
    config = services.config
    return max(config.session_timeout, config.infinite_session_timeout) + 60.0


@dataclass(slots=True)
class AgentTool:
    """One agent offered as a tool; calling it runs the agent as a child run."""

    spec: ToolSpec
    agent: Agent
    services: EngineServices
    chain: Chain
    timeout: float = 600.0
    source: str = field(init=False)

    def __post_init__(self) -> None:
        self.source = f"agent:{self.agent.name}"

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        task = str(arguments.get("task") or "").strip()
        if not task:
            return ToolResult("Error: `task` must say what the agent should do", True)
        refusal = self._refusal()
        if refusal is not None:
            return ToolResult(refusal, True)
        context = str(arguments.get("context") or "").strip()
        prompt = f"{task}\n\nContext:\n{context}" if context else task
        from tbd_agents.engine.delegated_run import ChildRun

        return await ChildRun(self.services, self.chain, self.agent, prompt, ctx).run()

    def _refusal(self) -> str | None:
        """Why this call may not run: a cycle or the depth limit (None: it may)."""
        chain = self.chain
        if self.agent.id in chain.agent_ids:
            names = " → ".join((*chain.agent_names, self.agent.name))
            return (
                f"Error: cycle: the agent {self.agent.name!r} is already running in this "
                f"delegation chain ({names}) and is not called again; do the task yourself "
                "or ask another agent"
            )
        limit = self.services.config.delegation_max_depth
        if chain.depth + 1 > limit:
            return (
                f"Error: delegation depth limit reached: this run is at depth {chain.depth} and "
                f"agents may call agents {limit} levels deep (DELEGATION_MAX_DEPTH); do the task "
                "yourself"
            )
        return None

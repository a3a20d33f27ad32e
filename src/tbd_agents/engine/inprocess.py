"""The engine as the runtime's run executor (`RUN_EXECUTOR`, default
`tbd_agents.engine.inprocess:build_executor`).

The runtime (`tbd_agents.runtime`) owns the task execution row, the persisted event log, leases
and halts; this executor loads the workflow's agent, runs the agent loop with the sink and halt
signal it is given, keeps the run's messages on the task (the next prompt continues the
conversation made of the workflow's runs; the reset endpoint starts a new one), records the run's log, messages, model and
usage on the task and the workflow (`EngineExecutor`) and returns the outcome.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus, WorkflowStatus
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.builder import close_run, load_guardrails, load_plan, open_plan
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.delegation import Chain, add_agent_tools
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails, guard_prompt
from tbd_agents.engine.messages import Message
from tbd_agents.engine.options import RunOptions
from tbd_agents.engine.progress import ProgressRecorder
from tbd_agents.engine.run_workspace import chat_workspace, prepare_workspace
from tbd_agents.engine.runrecord import RunLog, last_messages, wrap_response
from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.engine.session import bounded_run
from tbd_agents.engine.sources import KnowledgeSearch, MemoryStore
from tbd_agents.engine.workspace import Workspace
from tbd_agents.observability import logctx
from tbd_agents.observability.runs import describe_agent
from tbd_agents.observability.usage.meter import meter_for
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.observability.usage.store import UsageStore, usage_store_or_none
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome
from tbd_agents.security.cipher import KeyRingProvider, TokenCipher
from tbd_agents.security.outbound import OutboundGuard
from tbd_agents.services.approvals import LINK_PURPOSE, decisions_of, gate_for, open_pause
from tbd_agents.services.caller_credential import caller_credential_of
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.services.workflow_runs import (
    conversation_of,
    ensure_accepts_prompts,
    status_after_run,
)
from tbd_agents.storage.protocol import DocumentStore

log = logging.getLogger(__name__)


def _json_object(text: str) -> dict[str, Any] | None:
    """The structured request a prompt carries (the JSON of an object), if it is one."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class EngineServices:
    """What the engine needs from the rest of the application, built once per process."""

    store: DocumentStore
    cipher: TokenCipher
    config: EngineConfig
    catalog: ModelCatalog
    sandbox: Sandbox
    memory_service: Any | None = None  # services.memory.MemoryService
    retriever: Any | None = None  # knowledge.retrieval.KnowledgeRetriever
    outbound: OutboundGuard | None = None  # None: no allow-list, admins trusted
    owned_vectors: Any | None = None  # a vector store opened for these services (closed by aclose)
    usage: UsageStore | None = None  # the usage ledger and budgets (None: not kept)
    #: Seconds of a run's lease (RUN_LEASE_SECONDS): delegated runs renew theirs (engine/
    #: delegation.py) as the runtime renews a run's.
    lease_seconds: float = 30.0
    #: The event bus of this process's runtime (runtime/bus.py): delegated runs publish their
    #: events on it, as the runtime publishes a run's. None: no runtime in this process (a
    #: command-line tool), so nobody here follows a run live; their events are stored only.
    bus: Any | None = None
    _runs: Any | None = None  # the run store of `store` (delegated runs), built when needed

    def run_store(self) -> Any:
        """The run store on `store` (runtime/store.py): where delegated runs keep their event
        log and lease."""
        if self._runs is None:
            from tbd_agents.runtime.store import as_run_store

            self._runs = as_run_store(self.store)
        return self._runs

    public_base_url: str | None = None  # PUBLIC_BASE_URL: absolute approval links

    async def aclose(self) -> None:
        """Close what these services opened themselves (their vector store)."""
        vectors, self.owned_vectors = self.owned_vectors, None
        if vectors is not None:
            await vectors.close()

    def memory_for(self, agent: Agent) -> MemoryStore | None:
        if self.memory_service is None:
            return None
        from tbd_agents.engine.adapters import ServiceMemory

        return ServiceMemory(self.memory_service, agent)

    def knowledge(self) -> KnowledgeSearch | None:
        if self.retriever is None:
            return None
        from tbd_agents.engine.adapters import RetrieverKnowledge

        return RetrieverKnowledge(self.retriever)


async def run_agent(
    services: EngineServices,
    agent: Agent,
    inp: RunInput,
    sink: EventSink,
    halt: HaltSignal | None,
    *,
    model_override: str | None = None,
    max_turns: int | None = None,
    workflow: Workflow | None = None,
    workspace: Workspace | None = None,
    options: RunOptions | None = None,
    usage: UsageScope | None = None,
    chain: Chain | None = None,
) -> Any:
    """Build the agent's run and execute it within its session time (engine/session.py);
    returns the loop's `RunResult`. For a run of `workflow`, its guardrails join the agent's;
    `options` are the workflow's (engine/options.py; None: the defaults). `workspace`: the
    run's checkout or scratch directory; without one, a run outside a workflow (chat) gets its
    session's scratch one. `usage`: whom the run's model calls are recorded and budgeted for.
    `chain`: where the run sits in a delegation chain (engine/delegation.py; None: a run of its
    own, which the agents it lists as tools are called from); a delegated run takes the
    guardrails of its chain's workflow besides its agent's."""
    if workspace is None and workflow is None:
        workspace = await chat_workspace(services, agent, inp.session_id)
    if inp.approvals is None and agent.tool_policy is not None:
        # An entry point that set no gate (the OpenAI-compatible endpoint, the MCP server)
        # still obeys the agent's policy: `never` refuses, and `ask` is refused with the
        # reason, since only a workflow run (and the runs it delegates to) can pause for a
        # person. A delegated run sets its gate itself (engine/delegated_run.py).
        from tbd_agents.services.approvals import gate_for

        inp.approvals = await gate_for(services.store, agent, None, can_pause=False)
    async with services.store.unit_of_work() as repos:
        plan = await load_plan(
            repos, services.cipher, agent, services.config,
            model_override=model_override, outbound=services.outbound,
            workflow=workflow, inherited=chain.workflow if chain and chain.delegated else None,
        )  # fmt: skip
    spec, conns = await open_plan(
        plan, services.config, services.catalog,
        memory=services.memory_for(agent), knowledge=services.knowledge(), sandbox=services.sandbox,
        workspace=workspace,
        options=options,
    )  # fmt: skip
    if max_turns:
        spec.max_turns = max_turns
    if plan.agent_tools:
        user = usage.user_id if usage is not None else None
        chain = chain or Chain.root(agent, user_id=user, session_id=inp.session_id)
        add_agent_tools(spec, plan.agent_tools, services, chain)
    if services.usage is not None and usage is not None:
        spec.meter = meter_for(services.usage, usage, plan, spec.model_info)
    try:
        return await bounded_run(spec, sink, halt, inp)
    finally:
        await close_run(spec, conns)


class EngineExecutor:
    """Executes workflow runs (task executions) with the agent engine.

    Besides the outcome (which the runtime records), a run leaves what the existing TBD Agents
    showed: on the task its `model`, `reasoning_effort` (the task's, else the workflow's),
    `logs`, last 20 `messages` and its own `run_messages`; on the workflow the last run's
    `messages` (the conversation is the runs'), `logs`, `current_turn`
    (the run's tool calls), `usage` and a status back to `active` (unless made `inactive`).
    A workflow that is `inactive` when the run starts (a schedule fired) fails it (409 text).
    The workflow's `output_format` `json` wraps the answer as `{"response": text}`. The
    workflow's options (caveman, tsv_tool_results, memory, session bound, reasoning effort,
    credential overrides: engine/options.py) shape the run, and every todo-list `progress`
    event is written on the task as `progress` (engine/progress.py). The task's prompt is
    checked by the run's input guardrails before anything else: where a `redact` one matched,
    the task keeps (and the run log shows) the redacted prompt the model receives — a schedule
    or another entry point that stored the prompt without the API's check included."""

    def __init__(self, services: EngineServices, owns_store: bool = False) -> None:
        self.services = services
        self._owns_store = owns_store

    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        store = self.services.store
        request = _json_object(task.prompt)
        async with store.unit_of_work() as repos:
            workflow: Workflow = await repos.workflows.get(task.workflow_id)
            ensure_accepts_prompts(workflow)
            agent: Agent = await repos.agents.get(task.agent_id or workflow.agent_id)
            describe_agent(agent)  # the runtime's run span, named after the agent
            logctx.bind_here(user=workflow.github_user, agent_id=agent.id)
            effort = task.reasoning_effort or workflow.reasoning_effort
            guarded = await self._guard(repos, agent, workflow, task.prompt, request)
            resuming = task.paused_state is not None
            await repos.workflows.update(
                workflow.id,
                {"status": WorkflowStatus.RUNNING}
                if resuming
                else {"status": WorkflowStatus.RUNNING, "logs": [], "current_turn": 0},
            )
            changes: dict[str, Any] = {
                "model": workflow.model or agent.model or task.model,
                "reasoning_effort": effort,
            }
            prompt = task.prompt if guarded.blocking is not None else guarded.text
            if prompt != task.prompt:
                changes["prompt"] = prompt  # the redacted prompt, as the model receives it
            await repos.task_executions.update(task.id, changes)
        options = RunOptions.of_workflow(
            workflow, reasoning_effort=effort, todo_tool=self.services.config.workflow_todo_tool
        )
        progress = ProgressRecorder.for_task(store, task.id)
        runlog = RunLog(sink, on_progress=progress.record)
        runlog.add("prompt_received", prompt)
        async with store.unit_of_work(readonly=True) as repos:
            earlier, carried = await conversation_of(repos, workflow, task.id)
        history = [Message.from_dict(m) for m in earlier]
        inp = RunInput(
            prompt, history, request=request,
            session_id=workflow.id, run_id=task.id, guarded=guarded,
        )  # fmt: skip
        usage = UsageScope(
            user_id=workflow.github_user or agent.created_by, workflow_id=workflow.id,
            schedule_id=task.scheduled_agent_id, task_id=task.id,
        )  # fmt: skip
        inp.approvals = await gate_for(store, agent, workflow)
        if task.paused_state is not None:
            failed = await self._resume(task, inp, runlog)
            if failed is not None:
                return failed
        try:
            async with caller_credential_of(store, self.services.cipher, task):
                workspace = await prepare_workspace(
                    self.services, agent, workflow, runlog, resuming=resuming
                )
                result = await run_agent(
                    self.services, agent, inp, runlog, halt,
                    model_override=workflow.model, max_turns=workflow.max_turns,
                    workflow=workflow, workspace=workspace, options=options, usage=usage,
                    chain=Chain.root(agent, task=task, workflow=workflow, user_id=usage.user_id),
                )  # fmt: skip
            await progress.flush()
        except BaseException as exc:
            runlog.finish(TaskStatus.FAILED, getattr(exc, "message", None) or repr(exc))
            try:
                await self._record(
                    task, workflow.id, runlog, added=[], model=None, outcome=None,
                    earlier=earlier, carried=carried,
                )  # fmt: skip
            except Exception:  # the run's own error is the one to report; this one is logged
                log.exception("run %s: recording the failed run's log failed", task.id)
            raise
        outcome: RunOutcome = result.outcome
        if outcome.status is TaskStatus.AWAITING_APPROVAL:
            return await self._pause(task, workflow, result, runlog)
        outcome.result = wrap_response(outcome.result, workflow.output_format)
        runlog.finish(outcome.status, outcome.error or outcome.result)
        added = [m.to_dict() | {"task_id": task.id} for m in result.messages]
        await self._record(
            task, workflow.id, runlog, added=added, model=result.model, outcome=outcome,
            earlier=earlier, carried=carried,
        )  # fmt: skip
        return outcome

    async def _resume(
        self, task: TaskExecution, inp: RunInput, runlog: RunLog
    ) -> RunOutcome | None:
        """Set up a run paused for approval to resume (`inp.resume`, the decisions on its
        gate); the failed outcome instead when an approval expired with `on_timeout: fail`."""
        paused = task.paused_state or {}
        decisions, failure = await decisions_of(self.services.store, paused)
        async with self.services.store.unit_of_work() as repos:
            await repos.task_executions.update(task.id, {"paused_state": None})
        if failure is not None:
            await runlog.emit(EventType.ERROR, {"code": "approval_expired", "message": failure})
            return RunOutcome(
                TaskStatus.FAILED, error=failure, turns=task.turns, tool_calls=task.tool_calls
            )
        inp.approvals.decisions = decisions
        inp.resume = paused["loop"]
        runlog.entries = [*paused["loop"].get("log", []), *runlog.entries]
        return None

    async def _pause(
        self, task: TaskExecution, workflow: Workflow, result: Any, runlog: RunLog
    ) -> RunOutcome:
        """Store the waiting calls as approval records and the state to resume from, and
        announce each (`approval_requested`); the runtime then parks the run."""
        services = self.services
        for call in result.pending:
            runlog.add("approval_requested", call.call.name, tool_input=call.call.arguments)
        state = {**result.paused, "log": runlog.entries}
        payloads = await open_pause(
            services.store, task, workflow, result.pending, state,
            key=services.cipher.derive_key(LINK_PURPOSE), base_url=services.public_base_url,
        )  # fmt: skip
        for item in payloads:
            await runlog.emit(EventType.APPROVAL_REQUESTED, item)
        async with services.store.unit_of_work() as repos:  # the log so far, while it waits
            await repos.task_executions.update(task.id, {"logs": runlog.entries})
        outcome: RunOutcome = result.outcome
        outcome.approvals = payloads
        return outcome

    async def _guard(
        self,
        repos: Any,
        agent: Agent,
        workflow: Workflow,
        prompt: str,
        request: dict[str, Any] | None,
    ) -> GuardedPrompt:
        """The task's prompt after the run's request and input guardrails (the agent's and the
        workflow's, as the run loads them)."""
        records, _ = await load_guardrails(
            repos, agent, self.services.config.host.admins, workflow=workflow
        )
        return guard_prompt(Guardrails.from_records(records), prompt, request)

    async def _record(
        self,
        task: TaskExecution,
        workflow_id: str,
        runlog: RunLog,
        *,
        added: list[dict[str, Any]],
        model: str | None,
        outcome: RunOutcome | None,
        earlier: list[dict[str, Any]],
        carried: list[dict[str, Any]],
    ) -> None:
        """Write the run's record on the workflow and the task (see the class docstring).

        The run's own messages go on the task (`run_messages`, with `carried`: a conversation
        recorded before runs kept their messages, see `conversation_of`); the workflow keeps
        the last run's messages only, so its row stays the same size however many runs it
        has."""
        conversation = [*earlier, *added]
        async with self.services.store.unit_of_work() as repos:
            current = await repos.workflows.get(workflow_id)
            changes: dict[str, Any] = {
                "messages": added,
                "logs": runlog.entries,
                "status": status_after_run(current.status),
                "last_run_at": utcnow(),
            }
            if outcome is not None:
                changes |= {"current_turn": outcome.tool_calls, "usage": outcome.usage.stats()}
            await repos.workflows.update(workflow_id, changes)
            recorded: dict[str, Any] = {
                "logs": runlog.entries,
                "messages": last_messages(conversation),
                "run_messages": [*carried, *added],
            }
            if model is not None:
                recorded["model"] = model
            await repos.task_executions.update(task.id, recorded)

    async def aclose(self) -> None:
        await self.services.aclose()
        if self._owns_store:
            await self.services.store.close()


async def engine_services(
    settings: Settings,
    store: DocumentStore,
    *,
    vectors: Any | None = None,
    embedder: Any | None = None,
    bus: Any | None = None,
) -> EngineServices:
    """Engine services for `settings`: memory and knowledge when their stores can be built.

    Memory and knowledge use the vector store of the settings (`vectors.factory`: pgvector on
    the PostgreSQL store, Qdrant with the MongoDB profile), whatever the document store is.
    `vectors` / `embedder`: the process's own, when it has them open already (the API's
    knowledge services); otherwise they are opened here and closed with the executor. `bus`:
    the process's runtime bus (`EngineServices.bus`)."""
    config = EngineConfig.from_settings(settings)
    services = EngineServices(
        store=store,
        cipher=KeyRingProvider(settings).cipher(),
        config=config,
        catalog=ModelCatalog.load(config.model_catalog),
        sandbox=Sandbox.from_config(config),
        outbound=outbound_guard(settings),
        usage=usage_store_or_none(store),
        lease_seconds=settings.run_lease_seconds,
        bus=bus,
        public_base_url=settings.public_base_url,
    )
    try:
        from tbd_agents.embeddings.factory import load_embedder
        from tbd_agents.knowledge.retrieval import KnowledgeRetriever
        from tbd_agents.services.memory import MemoryService
        from tbd_agents.vectors.factory import open_vector_store

        if embedder is None:
            embedder = (await load_embedder(settings)).embedder
        if vectors is None:
            vectors = open_vector_store(settings, store)
            services.owned_vectors = vectors
        services.memory_service = MemoryService(
            store, vectors, embedder, max_per_agent=settings.memory_max_per_agent
        )
        cipher = services.cipher
        services.retriever = KnowledgeRetriever(
            store, vectors, embedder, outbound=services.outbound, cipher=lambda: cipher
        )
    except Exception:
        log.warning("memory and knowledge are unavailable to agents", exc_info=True)
    return services


async def build_executor(context: Any) -> EngineExecutor:
    """The runtime's executor factory (`ExecutorContext` → executor)."""
    store = context.store
    owns = store is None
    if store is None:
        from tbd_agents.storage.factory import open_store

        store = await open_store(context.settings)
    services = await engine_services(
        context.settings,
        store,
        vectors=getattr(context, "vectors", None),
        bus=getattr(context, "bus", None),
    )
    return EngineExecutor(services, owns_store=owns)


class _NoEvents:
    async def emit(self, event_type: Any, data: Any) -> None:
        return None


async def preview_context(services: EngineServices, agent: Agent, query: str) -> dict[str, Any]:
    """What a chat turn of `agent` on `query` would send the model besides the conversation,
    built by the same code as a run (`load_plan`, `open_plan`, `AgentLoop.retrieve`,
    `system_prompt_parts`): the system prompt's sections and the tool definitions, each with
    its token count (`engine/tokens.py`, the counter compaction uses), and the model's context
    window. Knowledge and memories are retrieved only for a non-empty `query`."""
    from tbd_agents.engine.context import system_prompt_parts
    from tbd_agents.engine.loop import AgentLoop
    from tbd_agents.engine.tokens import count_text, counter_name

    async with services.store.unit_of_work(readonly=True) as repos:
        plan = await load_plan(
            repos, services.cipher, agent, services.config, outbound=services.outbound
        )
    spec, conns = await open_plan(
        plan, services.config, services.catalog,
        memory=services.memory_for(agent), knowledge=services.knowledge(), sandbox=services.sandbox,
    )  # fmt: skip
    if plan.agent_tools:  # listed as a run offers them (not called here)
        add_agent_tools(spec, plan.agent_tools, services, Chain.root(agent))
    try:
        passages: list[Any] = []
        memories: list[Any] = []
        if query.strip():
            passages, memories = await AgentLoop(spec, _NoEvents()).retrieve(query, RunInput(query))
        sections, citations = system_prompt_parts(spec, passages, memories)
        tools = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in spec.tools.specs(spec.config.tool_description_max_chars)
        ]
    finally:
        await close_run(spec, conns)
    parts = [{"kind": kind, "text": text, "tokens": count_text(text)} for kind, text in sections]
    system = "\n\n".join(text for _, text in sections)
    tool_parts: list[dict[str, Any]] = [
        {
            "name": t["name"],
            "tokens": count_text(json.dumps(t, ensure_ascii=False)),
            "definition": t,
        }
        for t in tools
    ]
    system_tokens = count_text(system)
    tool_tokens = sum(int(t["tokens"]) for t in tool_parts)
    return {
        "model": spec.model,
        "context_window": spec.model_info.context_window,
        "max_output_tokens": spec.model_info.max_output_tokens,
        "counter": counter_name(),
        "query": query,
        "system_prompt": system,
        "parts": parts,
        "tools": tool_parts,
        "citations": citations,
        "memories": [m.key for m in memories],
        "system_tokens": system_tokens,
        "tool_tokens": tool_tokens,
        "total_tokens": system_tokens + tool_tokens,
        "warnings": list(spec.warnings),
    }

"""The engine as the runtime's run executor (`RUN_EXECUTOR`, default
`tbd_agents.engine.inprocess:build_executor`).

The runtime (`tbd_agents.runtime`) owns the task execution row, the persisted event log, leases
and halts; this executor loads the workflow's agent, runs the agent loop with the sink and halt
signal it is given, appends the run's messages to the workflow's conversation (so the next
prompt continues it; the reset endpoint clears it) and returns the outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus, WorkflowStatus
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.builder import close_run, load_plan, open_plan
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import Message
from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.engine.sources import KnowledgeSearch, MemoryStore
from tbd_agents.runtime.contracts import EventSink, HaltSignal, RunOutcome
from tbd_agents.security.cipher import KeyRingProvider, TokenCipher
from tbd_agents.security.outbound import OutboundGuard
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.storage.protocol import DocumentStore

log = logging.getLogger(__name__)

WORKFLOW_STATUS = {
    TaskStatus.COMPLETED: WorkflowStatus.COMPLETED,
    TaskStatus.FAILED: WorkflowStatus.FAILED,
    TaskStatus.HALTED: WorkflowStatus.HALTED,
    TaskStatus.MAX_TURNS_REACHED: WorkflowStatus.MAX_TURNS_REACHED,
}


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
) -> Any:
    """Build the agent's run and execute it; returns the loop's `RunResult`."""
    async with services.store.unit_of_work() as repos:
        plan = await load_plan(
            repos, services.cipher, agent, services.config,
            model_override=model_override, outbound=services.outbound,
        )  # fmt: skip
    spec, conns = await open_plan(
        plan, services.config, services.catalog,
        memory=services.memory_for(agent), knowledge=services.knowledge(), sandbox=services.sandbox,
    )  # fmt: skip
    if max_turns:
        spec.max_turns = max_turns
    try:
        return await AgentLoop(spec, sink, halt).run(inp)
    finally:
        await close_run(spec, conns)


class EngineExecutor:
    """Executes workflow runs (task executions) with the agent engine."""

    def __init__(self, services: EngineServices, owns_store: bool = False) -> None:
        self.services = services
        self._owns_store = owns_store

    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        store = self.services.store
        async with store.unit_of_work() as repos:
            workflow: Workflow = await repos.workflows.get(task.workflow_id)
            agent: Agent = await repos.agents.get(task.agent_id or workflow.agent_id)
            await repos.workflows.update(workflow.id, {"status": WorkflowStatus.RUNNING})
        history = [Message.from_dict(m) for m in workflow.messages]
        inp = RunInput(task.prompt, history, session_id=workflow.id, run_id=task.id)
        try:
            result = await run_agent(
                self.services, agent, inp, sink, halt,
                model_override=workflow.model, max_turns=workflow.max_turns,
            )  # fmt: skip
        except BaseException:
            async with store.unit_of_work() as repos:
                await repos.workflows.update(workflow.id, {"status": WorkflowStatus.FAILED})
            raise
        outcome: RunOutcome = result.outcome
        added = [m.to_dict() | {"task_id": task.id} for m in result.messages]
        async with store.unit_of_work() as repos:
            current = await repos.workflows.get(workflow.id)
            await repos.workflows.update(
                workflow.id,
                {
                    "messages": [*current.messages, *added],
                    "status": WORKFLOW_STATUS.get(outcome.status, WorkflowStatus.FAILED),
                    "last_run_at": utcnow(),
                },
            )
        return outcome

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
) -> EngineServices:
    """Engine services for `settings`: memory and knowledge when their stores can be built.

    Memory and knowledge use the vector store of the settings (`vectors.factory`: pgvector on
    the PostgreSQL store, Qdrant with the MongoDB profile), whatever the document store is.
    `vectors` / `embedder`: the process's own, when it has them open already (the API's
    knowledge services); otherwise they are opened here and closed with the executor."""
    config = EngineConfig.from_settings(settings)
    services = EngineServices(
        store=store,
        cipher=KeyRingProvider(settings).cipher(),
        config=config,
        catalog=ModelCatalog.load(config.model_catalog),
        sandbox=Sandbox.from_config(config),
        outbound=outbound_guard(settings),
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
        services.retriever = KnowledgeRetriever(
            store, vectors, embedder, outbound=services.outbound
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
        context.settings, store, vectors=getattr(context, "vectors", None)
    )
    return EngineExecutor(services, owns_store=owns)

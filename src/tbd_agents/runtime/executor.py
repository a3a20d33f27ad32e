"""What executes one run: the agent engine by default, behind a small protocol.

The runtime does not know how an agent thinks. It claims a run, hands an executor the task
execution, an `EventSink` and a `HaltSignal`, and records the `RunOutcome` it gets back. The
executor is built once per process by the factory named in the `RUN_EXECUTOR` setting
(`module:function`, default the engine's `tbd_agents.engine.inprocess:build_executor`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.models import TaskExecution
from tbd_agents.errors import ConfigurationError
from tbd_agents.runtime.contracts import EventSink, HaltSignal, RunOutcome
from tbd_agents.storage.protocol import DocumentStore


class RunExecutor(Protocol):
    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        """Run the task to its end and say how it ended. Must return soon after `halt` is set
        (with status halted); may raise, which the runtime records as a failed run."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ExecutorContext:
    """What a factory may use to build its executor (all owned by the runtime).

    `db`: the PostgreSQL engine of the run store (None on MongoDB). `vectors`: the process's
    vector store when one is already open (the API's), else None. `bus`: the runtime's event
    bus (`runtime/bus.py`), on which runs the executor starts itself (delegated runs) publish
    their events as the runtime publishes a run's."""

    settings: Settings
    db: AsyncEngine | None
    store: DocumentStore | None = None
    vectors: Any = None
    bus: Any = None


ExecutorFactory = Callable[[ExecutorContext], "RunExecutor | Awaitable[RunExecutor]"]


def load_factory(spec: str) -> ExecutorFactory:
    """Import the factory named `module:attribute`; ConfigurationError naming the fix if absent."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"RUN_EXECUTOR={spec!r} is not of the form `package.module:function`"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"RUN_EXECUTOR={spec!r}: module {module_name!r} cannot be imported ({exc}); "
            "unset RUN_EXECUTOR to use the agent engine, or install the module"
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigurationError(
            f"RUN_EXECUTOR={spec!r}: {module_name} has no function {attribute!r}"
        )
    result: ExecutorFactory = factory
    return result


async def build_executor(context: ExecutorContext) -> RunExecutor:
    """The executor of this process, from the factory in `RUN_EXECUTOR`."""
    built: Any = load_factory(context.settings.run_executor)(context)
    if inspect.isawaitable(built):
        built = await built
    executor: RunExecutor = built
    return executor

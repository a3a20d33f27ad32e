"""What the services know about each resource: references, dependants, parents, managed fields.

This table is the single statement of the referential rules the API enforces:

* a record that names an unknown (or invisible) record in a reference field is refused with 422
  naming the field;
* deleting a record either cascades to its children or is refused with 409 listing dependants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import McpTransport
from tbd_agents.domain.models import (
    Agent,
    ChatMessage,
    ChatSession,
    CustomTool,
    Entity,
    Guardrail,
    KnowledgeItem,
    KnowledgeSource,
    McpServer,
    Memory,
    Provider,
    ScheduledAgent,
    Skill,
    TaskExecution,
    Token,
    Workflow,
)
from tbd_agents.engine.guardrails import validate_guardrail
from tbd_agents.engine.sandbox import check_tool_policy
from tbd_agents.runtime.scheduler import occurrence_after, validate_schedule
from tbd_agents.services.access import Principal
from tbd_agents.services.delegation import check_delegation_cycle
from tbd_agents.storage.protocol import Repositories


class OnDelete(StrEnum):
    REFUSE = "refuse"  # 409 while dependants exist
    CASCADE = "cascade"  # dependants are deleted with the record


@dataclass(frozen=True, slots=True)
class Reference:
    """`field` of the record names a `target` record by `by` (its id, or its name for tokens)."""

    field: str
    target: type[Entity]
    many: bool = False
    by: str = "id"


@dataclass(frozen=True, slots=True)
class Dependant:
    """Records of `model` whose `field` names the record being deleted."""

    model: type[Entity]
    field: str
    on_delete: OnDelete
    many: bool = False
    by: str = "id"


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    model: type[Entity]
    label: str
    references: tuple[Reference, ...] = ()
    dependants: tuple[Dependant, ...] = ()
    parent: Reference | None = None  # owner comes from this parent (child records)
    #: A second parent a child record may have instead (a run an agent delegated to from a
    #: chat turn: its chat session; it has no workflow). Visible to whoever sees that parent.
    other_parent: Reference | None = None
    managed: frozenset[str] = field(default_factory=frozenset)  # set by the server only
    immutable: frozenset[str] = field(default_factory=frozenset)  # set at creation only
    #: Rules across fields that the model alone cannot check; raises InvalidData naming the fix.
    check: Callable[[Entity], None] | None = None
    #: Who may save the record as it would be stored; raises PermissionDenied naming the setting.
    gate: Callable[[Entity, Principal], None] | None = None
    #: Managed fields the server computes on a save: (stored record or None on create, record
    #: as it will be stored) -> values to store with it.
    derive: Callable[[Entity | None, Entity], dict[str, Any]] | None = None
    #: Rules that need other stored records (the agents' delegation graph: no cycle), checked
    #: on the record as it would be stored; raises InvalidData naming the fix.
    verify: Callable[[Repositories, Entity], Awaitable[None]] | None = None


def _check_schedule(record: Entity) -> None:
    if isinstance(record, ScheduledAgent):
        validate_schedule(record)


#: Fields whose change moves a schedule's next run.
_TIMING = ("enabled", "start_at", "end_at", "interval_value", "interval_unit", "cron_expression",
           "timezone")  # fmt: skip


def _next_run(current: Entity | None, record: Entity) -> dict[str, Any]:
    """A schedule's `next_run_at` as soon as it is saved (the scheduler would fill it in at its
    next tick; until then the API showed null, however far `start_at` was): the first
    occurrence from now when the schedule is new, its timing changed or it has none; null while
    it is disabled. An edit of anything else keeps it, so a run due now is not skipped."""
    if not isinstance(record, ScheduledAgent):
        return {}
    if not record.enabled:
        return {"next_run_at": None}
    if (
        isinstance(current, ScheduledAgent)
        and current.next_run_at is not None
        and all(getattr(current, f) == getattr(record, f) for f in _TIMING)
    ):
        return {}
    return {"next_run_at": occurrence_after(record, datetime.now(UTC) - timedelta(microseconds=1))}


def _check_custom_tool(record: Entity) -> None:
    if isinstance(record, CustomTool):
        check_tool_policy(record)  # operator ceilings, allowed_hosts syntax


def _check_guardrail(record: Entity) -> None:
    if isinstance(record, Guardrail):
        validate_guardrail(record)  # patterns compile and cannot backtrack catastrophically


def _gate_mcp(record: Entity, principal: Principal) -> None:
    """stdio servers start a host process: admins, or commands the operator allows users."""
    if isinstance(record, McpServer) and record.transport_type is McpTransport.STDIO:
        principal.require_stdio(str(record.connection_config.get("command") or ""))


def _gate_custom_tool(record: Entity, principal: Principal) -> None:
    principal.require_custom_tools()


_AGENT_REFS = (
    Reference("provider_id", Provider),
    Reference("mcp_server_ids", McpServer, many=True),
    Reference("knowledge_source_ids", KnowledgeSource, many=True),
    Reference("custom_tool_ids", CustomTool, many=True),
    Reference("skill_ids", Skill, many=True),
    Reference("guardrail_ids", Guardrail, many=True),
    Reference("agent_tool_ids", Agent, many=True),
)


def _used_by_agents(field_name: str) -> Dependant:
    return Dependant(Agent, field_name, OnDelete.REFUSE, many=True)


SPECS: dict[type[Entity], ResourceSpec] = {
    spec.model: spec
    for spec in (
        ResourceSpec(
            Agent,
            "agent",
            references=_AGENT_REFS,
            dependants=(
                Dependant(Workflow, "agent_id", OnDelete.REFUSE),
                Dependant(ChatSession, "agent_id", OnDelete.REFUSE),
                Dependant(Memory, "agent_id", OnDelete.CASCADE),
                _used_by_agents("agent_tool_ids"),
            ),
            verify=check_delegation_cycle,
        ),
        ResourceSpec(Skill, "skill", dependants=(_used_by_agents("skill_ids"),)),
        ResourceSpec(
            McpServer,
            "MCP server",
            dependants=(_used_by_agents("mcp_server_ids"),),
            managed=frozenset({"status", "last_error"}),
            gate=_gate_mcp,
        ),
        ResourceSpec(
            CustomTool,
            "custom tool",
            dependants=(_used_by_agents("custom_tool_ids"),),
            check=_check_custom_tool,
            gate=_gate_custom_tool,
            managed=frozenset({"is_plugin"}),  # set by the plugin loader
        ),
        ResourceSpec(
            Guardrail,
            "guardrail",
            dependants=(_used_by_agents("guardrail_ids"),),
            check=_check_guardrail,
        ),
        ResourceSpec(
            Provider,
            "provider",
            references=(Reference("api_key_token_name", Token, by="name"),),
            dependants=(Dependant(Agent, "provider_id", OnDelete.REFUSE),),
        ),
        ResourceSpec(
            Token,
            "token",
            dependants=(Dependant(Provider, "api_key_token_name", OnDelete.REFUSE, by="name"),),
            managed=frozenset({"encrypted_value", "key_version"}),
        ),
        ResourceSpec(
            KnowledgeSource,
            "knowledge source",
            dependants=(
                _used_by_agents("knowledge_source_ids"),
                Dependant(KnowledgeItem, "source_id", OnDelete.CASCADE),
            ),
            managed=frozenset({"status", "last_error"}),
        ),
        ResourceSpec(
            KnowledgeItem,
            "knowledge item",
            parent=Reference("source_id", KnowledgeSource),
            managed=frozenset({"status", "file_id", "sha256", "file_size"}),
            # Chunks are made from the text and tags: changing them goes through
            # KnowledgeServices.update_item, which indexes the item again.
            immutable=frozenset({"source_id", "content_type", "file_name"}),
        ),
        ResourceSpec(
            Memory,
            "memory",
            references=(Reference("agent_id", Agent),),
            managed=frozenset({"embedding"}),
        ),
        ResourceSpec(
            Workflow,
            "workflow",
            references=(Reference("agent_id", Agent),),
            dependants=(
                Dependant(ScheduledAgent, "workflow_id", OnDelete.CASCADE),
                Dependant(TaskExecution, "workflow_id", OnDelete.CASCADE),
                # the approvals of its runs, decided or waiting (a deleted run resumes nowhere)
                Dependant(ToolApproval, "workflow_id", OnDelete.CASCADE),
            ),
            # `status` is writable as active/inactive only (WorkflowInput); runs set the rest.
            managed=frozenset(
                {
                    "messages",
                    "logs",
                    "last_run_at",
                    "current_turn",
                    "usage",
                    "session_id",
                    "conversation_reset_at",
                }
            ),
        ),
        ResourceSpec(
            TaskExecution,
            "task",
            parent=Reference("workflow_id", Workflow),
            other_parent=Reference("chat_session_id", ChatSession),
            dependants=(Dependant(ToolApproval, "task_id", OnDelete.CASCADE),),
        ),
        ResourceSpec(
            ScheduledAgent,
            "scheduled agent",
            references=(Reference("workflow_id", Workflow),),
            managed=frozenset({"last_run_at", "next_run_at", "redbeat_key"}),
            check=_check_schedule,
            derive=_next_run,
        ),
        ResourceSpec(
            ChatSession,
            "chat session",
            references=(Reference("agent_id", Agent),),
            dependants=(
                Dependant(ChatMessage, "session_id", OnDelete.CASCADE),
                # the runs its turns delegated to (agent-as-tool children): their tasks and
                # answers are the conversation's content
                Dependant(TaskExecution, "chat_session_id", OnDelete.CASCADE),
            ),
            managed=frozenset({"message_count", "last_message_at", "message_seq"}),
            immutable=frozenset({"agent_id"}),
        ),
        ResourceSpec(
            ChatMessage,
            "chat message",
            parent=Reference("session_id", ChatSession),
            immutable=frozenset({"session_id"}),
            managed=frozenset({"seq"}),
        ),
    )
}


def spec_of(model: type[Entity]) -> ResourceSpec:
    return SPECS[model]

"""The resource routers under /api, built from the generic CRUD factory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import StringConstraints

from tbd_agents.api.crud import TAG, TAGS, ListFilter, crud_router
from tbd_agents.domain.enums import (
    GuardrailType,
    KnowledgeContentType,
    KnowledgeItemStatus,
    KnowledgeSourceStatus,
    KnowledgeSourceType,
    McpServerStatus,
    McpTransport,
    MemoryScope,
    ProviderType,
    TaskStatus,
    TaskTrigger,
    WorkflowStatus,
)
from tbd_agents.domain.models import (
    Agent,
    ChatSession,
    CustomTool,
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
from tbd_agents.storage.protocol import Sort


def _f(param: str, annotation: object, description: str = "") -> ListFilter:
    return ListFilter(param, annotation, description=description or f"Exact {param}.")


NAME = _f("name", str | None)


def resource_routers() -> list[APIRouter]:
    return [
        crud_router(
            Agent,
            "/api/agents",
            "agents",
            filters=(TAGS, NAME, _f("provider_id", str | None), _f("model", str | None)),
        ),
        crud_router(Skill, "/api/skills", "skills", filters=(TAGS, NAME)),
        crud_router(
            McpServer,
            "/api/mcps",
            "mcp servers",
            filters=(
                TAGS,
                NAME,
                _f("status", McpServerStatus | None),
                _f("transport_type", McpTransport | None),
            ),
        ),
        crud_router(
            CustomTool,
            "/api/custom-tools",
            "custom tools",
            filters=(TAGS, NAME, _f("is_enabled", bool | None)),
        ),
        crud_router(
            Guardrail,
            "/api/guardrails",
            "guardrails",
            filters=(
                TAGS,
                TAG,
                NAME,
                _f("guardrail_type", GuardrailType | None),
                _f("enabled", bool | None),
            ),
        ),
        crud_router(
            Provider,
            "/api/providers",
            "providers",
            filters=(NAME, _f("provider_type", ProviderType | None)),
        ),
        crud_router(Token, "/api/tokens", "tokens", filters=(NAME,)),
        crud_router(
            KnowledgeSource,
            "/api/knowledge-sources",
            "knowledge",
            filters=(
                TAGS,
                NAME,
                _f("source_type", KnowledgeSourceType | None),
                _f("status", KnowledgeSourceStatus | None),
            ),
        ),
        crud_router(
            KnowledgeItem,
            "/api/knowledge-items",
            "knowledge",
            filters=(
                TAGS,
                _f("source_id", str | None),
                _f("status", KnowledgeItemStatus | None),
                _f("content_type", KnowledgeContentType | None),
            ),
        ),
        crud_router(
            Memory,
            "/api/memories",
            "memories",
            filters=(
                _f("agent_id", str | None),
                _f("scope", MemoryScope | None),
                ListFilter(
                    "tags",
                    list[str] | None,
                    field="metadata.tags",
                    op="tags",
                    description="Memories whose metadata.tags has every tag given (repeat the "
                    "parameter); one comma-separated value: any of them.",
                ),
                _f("key", str | None),
                _f("session_id", str | None),
            ),
            # Writes go through the memory service (embedding, TTL, cap): `routers/knowledge.py`.
            creatable=False,
            writable=False,
            deletable=False,
        ),
        crud_router(
            Workflow,
            "/api/workflows",
            "workflows",
            filters=(TAGS, _f("agent_id", str | None), _f("status", WorkflowStatus | None)),
        ),
        crud_router(
            TaskExecution,
            "/api/tasks",
            "tasks",
            creatable=False,
            writable=False,
            filters=(
                _f("workflow_id", str | None),
                _f("agent_id", str | None),
                _f("scheduled_agent_id", str | None),
                _f("status", TaskStatus | None),
                _f("trigger", TaskTrigger | None),
                # runs agents delegated to (docs/multi-agent.md)
                _f("parent_task_id", str | None),
                _f("root_task_id", str | None),
                _f("chat_session_id", str | None),
                ListFilter(
                    "q",
                    Annotated[str, StringConstraints(max_length=200)] | None,
                    field="prompt|error",
                    op="text",
                    description="Runs whose prompt or error contains this text (any case).",
                ),
            ),
        ),
        crud_router(
            ScheduledAgent,
            "/api/scheduled-agents",
            "scheduled agents",
            filters=(_f("workflow_id", str | None), _f("enabled", bool | None)),
        ),
        crud_router(
            ChatSession,
            "/api/chat/sessions",
            "chat",
            filters=(_f("agent_id", str | None),),
            sort=(Sort("updated_at", True),),
        ),
    ]

"""Every router of the API, in the order they appear in the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from tbd_agents.api.deps import ApiContext


def all_routers() -> list[APIRouter]:
    from tbd_agents.api.resources import resource_routers
    from tbd_agents.api.routers import (
        agent_builder,
        agent_chat,
        approvals,
        bundle,
        chat,
        custom_tools,
        health,
        keys,
        knowledge,
        onboarding,
        openai_compat,
        providers,
        schedule_preview,
        tasks,
        tool_checks,
        usage,
        workflow_skills,
    )
    from tbd_agents.runtime import api as runtime_api

    return [
        health.router,
        # before the resource routers: `/api/agents/{record_id}` would take `/api/agents/export`
        bundle.resource_router,
        keys.router,
        chat.router,
        agent_chat.router,
        agent_chat.start_router,
        agent_builder.router,
        providers.router,
        onboarding.router,
        knowledge.router,
        knowledge.memories,
        tool_checks.router,
        custom_tools.router,
        schedule_preview.router,
        tasks.router,
        workflow_skills.router,
        usage.router,
        openai_compat.router,
        approvals.router,
        *resource_routers(),
        bundle.router,
        runtime_api.router,
    ]


async def attach_services(ctx: ApiContext) -> None:
    """Hook for services built once per app (knowledge ingestion, memory search)."""
    from tbd_agents.api.routers import knowledge

    await knowledge.attach(ctx)

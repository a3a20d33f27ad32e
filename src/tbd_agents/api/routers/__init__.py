"""Every router of the API, in the order they appear in the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from tbd_agents.api.deps import ApiContext


def all_routers() -> list[APIRouter]:
    from tbd_agents.api.resources import resource_routers
    from tbd_agents.api.routers import (
        agent_chat,
        bundle,
        chat,
        custom_tools,
        health,
        keys,
        knowledge,
        providers,
        schedule_preview,
        tool_checks,
    )
    from tbd_agents.runtime import api as runtime_api

    return [
        health.router,
        keys.router,
        chat.router,
        agent_chat.router,
        providers.router,
        knowledge.router,
        knowledge.memories,
        tool_checks.router,
        custom_tools.router,
        schedule_preview.router,
        *resource_routers(),
        bundle.router,
        runtime_api.router,
    ]


async def attach_services(ctx: ApiContext) -> None:
    """Hook for services built once per app (knowledge ingestion, memory search)."""
    from tbd_agents.api.routers import knowledge

    await knowledge.attach(ctx)

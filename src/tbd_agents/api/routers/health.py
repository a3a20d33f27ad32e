"""Liveness (/health) and readiness (/health/ready) with the latency of each check."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from tbd_agents.api.deps import Ctx
from tbd_agents.services.health import CheckResult, readiness

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: list[CheckResult]


@router.get("/health", response_model=HealthOut, summary="Liveness: the process answers")
async def health() -> HealthOut:
    """`{"status": "ok"}` whenever the process answers, as in the existing API: a liveness
    probe. It does not look at the database (a restart of this process would not bring it
    back; `serve` restarts its embedded PostgreSQL itself). Use /health/ready to know whether
    requests can be served."""
    return HealthOut(status="ok")


@router.get("/health/live", response_model=HealthOut, summary="Liveness (same as /health)")
async def live() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/health/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "A dependency is not ready"}},
    summary="Readiness: database reachable and migrated, embedded PostgreSQL running with disk "
    "space, vector store, Redis when configured",
)
async def ready(ctx: Ctx, response: Response) -> ReadyOut:
    checks = await readiness(ctx.settings, ctx.store, ctx.services)
    ok = all(c.ok for c in checks)
    response.status_code = 200 if ok else 503
    return ReadyOut(status="ok" if ok else "unavailable", checks=checks)

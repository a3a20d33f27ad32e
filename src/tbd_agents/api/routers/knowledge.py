"""Knowledge items beyond CRUD: multipart upload and content download (wired in attach())."""

from __future__ import annotations

from fastapi import APIRouter

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext

router = APIRouter(tags=["knowledge"], responses=ERRORS)


async def attach(ctx: ApiContext) -> None:
    """Build the knowledge services once per app (nothing yet)."""

"""Export / import of bundles (see services/bundle.py)."""

from __future__ import annotations

from fastapi import APIRouter

from tbd_agents.api.crud import ERRORS

router = APIRouter(tags=["export/import"], responses=ERRORS)

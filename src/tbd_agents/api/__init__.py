"""The HTTP API (FastAPI): routers parse, authorise, call a service and map errors."""

from tbd_agents.api.app import create_app

__all__ = ["create_app"]

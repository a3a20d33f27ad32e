"""Helpers shared by the CLI modules: settings, and errors shown as one line with exit code 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from alembic.util.exc import CommandError

from tbd_agents.config import Settings, load_settings
from tbd_agents.errors import TbdError
from tbd_agents.logs import configure_logging

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` on stderr as one line and return the Exit to raise."""
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so our errors print one clear line (no traceback) and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TbdError as exc:
            raise fail(exc.message) from None
        except CommandError as exc:
            raise fail(str(exc)) from None

    return wrapper


def settings() -> Settings:
    """The settings from the environment and `.env` (ConfigurationError on bad input), with log
    redaction installed for this process and its secret values registered."""
    config = load_settings()
    configure_logging(config, handlers=False)
    return config

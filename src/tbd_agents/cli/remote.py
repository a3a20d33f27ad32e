"""What the CLI commands that talk to a running server share: connection options (`--url`,
`--key`, `--output`), request bodies from `--file` / `--set`, JSON and table output, and API
errors shown as one line naming the fix, with documented exit codes (docs/client.md)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel

from tbd_agents.client import ApiError, TbdAgentsClient, TransportError

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8000"


class ExitCode:
    """Exit codes of the commands that call the API."""

    OK = 0
    API_ERROR = 1  # any other error answer (5xx, ...)
    USAGE = 2  # bad options or body (typer's own usage errors use 2 as well)
    AUTH = 3  # 401 / 403: no, bad or insufficient key
    NOT_FOUND = 4  # 404
    REJECTED = 5  # 400 / 409 / 412 / 422: the server refused the request as sent
    UNREACHABLE = 6  # no answer: server down, wrong URL, timeout


class Output(StrEnum):
    json = "json"
    table = "table"


UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="TBD_URL", help="Server URL.", show_default=True),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar="TBD_API_KEY", help="API key (tbd-agents keys create)."),
]
OutputOption = Annotated[
    Output,
    typer.Option(
        "--output", "-o", envvar="TBD_OUTPUT", help="json (stable, for scripts) or table."
    ),
]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="JSON body from this file ('-': standard input)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="key=value (repeatable; a.b=v nests; the value is read as JSON when it parses).",
    ),
]


class UsageError(Exception):
    """Bad command input: a --url, --set or --file the command cannot use (exit 2)."""


def die(message: str, code: int) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def explain(exc: ApiError, url: str) -> tuple[str, int]:
    """One line saying what went wrong and how to fix it, and the exit code."""
    status = exc.status_code
    if status == 401:
        return (
            f"not authenticated by {url} (401: {exc.detail}): set TBD_API_KEY or --key to a "
            "valid API key (an admin makes one with `tbd-agents keys create`)",
            ExitCode.AUTH,
        )
    if status == 403:
        return f"permission denied (403): {exc.detail}", ExitCode.AUTH
    if status == 404:
        return f"not found (404): {exc.detail}", ExitCode.NOT_FOUND
    if status in (400, 409, 412, 422):
        return f"rejected ({status}): {exc.detail}", ExitCode.REJECTED
    return f"the server answered {status}: {exc.detail}", ExitCode.API_ERROR


def api_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn client errors into one line on stderr and the exit code of `ExitCode`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        url = str(kwargs.get("url") or DEFAULT_URL)
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            message, code = explain(exc, url)
            raise die(message, code) from None
        except TransportError as exc:
            raise die(
                f"cannot reach {url} ({exc.cause or exc}): is the server running "
                "(`tbd-agents serve`)? Otherwise set TBD_URL or --url",
                ExitCode.UNREACHABLE,
            ) from None
        except UsageError as exc:
            raise die(str(exc), ExitCode.USAGE) from None

    return wrapper


def connect(url: str, key: str | None, *, timeout: float | None = 30.0) -> TbdAgentsClient:
    try:
        return TbdAgentsClient(base_url=url or DEFAULT_URL, token=key, timeout=timeout)
    except ValueError as exc:  # the URL
        raise UsageError(f"--url / TBD_URL: {exc}") from None


# --- request bodies -------------------------------------------------------------------------


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def body_from(file: Path | None, assignments: Sequence[str] | None) -> dict[str, Any]:
    """The JSON object of `--file` (if any) with each `--set key=value` applied over it."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{file} must hold a JSON object")
        body = loaded
    for item in assignments or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes key=value, got {item!r}")
        *parents, leaf = key.strip().split(".")
        target = body
        for part in parents:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {key}: {part} is not an object")
            target = child
        target[leaf] = _value(raw)
    return body


# --- output ---------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-ready data of a model, a list of models, or plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def show(value: Any, output: Output, columns: Sequence[str] = ("id", "name")) -> None:
    """Print a record or a list of records as JSON (indented, keys in the server's order) or
    as a table (lists: `columns`; one record: a field / value table)."""
    data = plain(value)
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if isinstance(data, list):
        table = Table(*columns)
        for row in data:
            table.add_row(*(_cell(row.get(c)) if isinstance(row, dict) else "" for c in columns))
        console.print(table)
        console.print(f"{len(data)} record(s)", style="dim")
    elif isinstance(data, dict):
        table = Table("field", "value")
        for name, field_value in data.items():
            table.add_row(name, _cell(field_value))
        console.print(table)
    elif data is not None:
        console.print(str(data))

"""`tbd-agents agents|workflows|skills|... list|get|create|update|delete`: the API's resources
from the command line, built on the Python client (`tbd_agents.client`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from tbd_agents.cli.remote import (
    DEFAULT_URL,
    ExitCode,
    FileOption,
    KeyOption,
    Output,
    OutputOption,
    SetOption,
    UrlOption,
    api_errors,
    body_from,
    connect,
    die,
    show,
)
from tbd_agents.client import TbdAgentsClient


@dataclass(frozen=True)
class Spec:
    """One resource: its command name, the client attribute, its table columns."""

    command: str
    attribute: str
    noun: str
    columns: tuple[str, ...]

    @property
    def a(self) -> str:
        """The noun with its indefinite article."""
        return f"{'an' if self.noun[0] in 'aeiouAEIOU' or self.noun.startswith('MCP') else 'a'} {self.noun}"


SPECS = (
    Spec("agents", "agents", "agent", ("id", "name", "model", "provider_id", "updated_at")),
    Spec("workflows", "workflows", "workflow", ("id", "title", "agent_id", "status", "task_count")),
    Spec("skills", "skills", "skill", ("id", "name", "description", "tags")),
    Spec("mcps", "mcps", "MCP server", ("id", "name", "transport_type", "status", "tags")),
    Spec("providers", "providers", "provider", ("id", "name", "provider_type", "base_url")),
    Spec("tokens", "tokens", "token", ("id", "name", "masked_value", "description")),
    Spec("guardrails", "guardrails", "guardrail", ("id", "name", "guardrail_type", "enabled")),
    Spec("custom-tools", "custom_tools", "custom tool", ("id", "name", "is_enabled", "description")),
    Spec("knowledge", "knowledge_sources", "knowledge source", ("id", "name", "source_type", "status")),
    Spec("knowledge-items", "knowledge_items", "knowledge item", ("id", "name", "source_id", "content_type")),
    Spec("memories", "memories", "memory", ("id", "agent_id", "scope", "key", "value")),
    Spec("schedules", "scheduled_agents", "scheduled agent", ("id", "name", "workflow_id", "interval_value", "interval_unit", "enabled")),
)  # fmt: skip

IdArgument = Annotated[str, typer.Argument(help="The record's id.")]


def _resource(client: TbdAgentsClient, spec: Spec) -> Any:
    return getattr(client, spec.attribute)


def add_commands(app: typer.Typer, spec: Spec) -> None:
    """Add list / get / create / update / delete for `spec` to `app`."""

    @app.command("list")
    @api_errors
    def list_(url: UrlOption = DEFAULT_URL, key: KeyOption = None,
              output: OutputOption = Output.table) -> None:  # fmt: skip
        with connect(url, key) as client:
            show(_resource(client, spec).list(), output, spec.columns)

    list_.__doc__ = f"List the {spec.noun} records you can see (newest first)."

    @app.command("get")
    @api_errors
    def get(record_id: IdArgument, url: UrlOption = DEFAULT_URL,
            key: KeyOption = None, output: OutputOption = Output.table) -> None:  # fmt: skip
        with connect(url, key) as client:
            show(_resource(client, spec).get(record_id), output, spec.columns)

    get.__doc__ = f"Show one {spec.noun} (every field)."

    @app.command("create")
    @api_errors
    def create(file: FileOption = None, set_: SetOption = None,
               url: UrlOption = DEFAULT_URL, key: KeyOption = None,
               output: OutputOption = Output.table) -> None:  # fmt: skip
        body = body_from(file, set_)
        if not body:
            raise die("give the body with --file body.json and/or --set key=value", ExitCode.USAGE)
        with connect(url, key) as client:
            show(_resource(client, spec).create(body), output, spec.columns)

    create.__doc__ = (
        f"Create {spec.a} from --file and/or --set key=value.\n\n"
        f"Example: tbd-agents {spec.command} create --file body.json --set name=example"
    )

    @app.command("update")
    @api_errors
    def update(record_id: IdArgument, file: FileOption = None, set_: SetOption = None,
               url: UrlOption = DEFAULT_URL, key: KeyOption = None,
               output: OutputOption = Output.table) -> None:  # fmt: skip
        body = body_from(file, set_)
        if not body:
            raise die("give the changes with --file and/or --set key=value", ExitCode.USAGE)
        with connect(url, key) as client:
            show(_resource(client, spec).update(record_id, body), output, spec.columns)

    update.__doc__ = (
        f"Change fields of {spec.a} (only the fields given change).\n\n"
        f"Example: tbd-agents {spec.command} update ID --set description=changed"
    )

    @app.command("delete")
    @api_errors
    def delete(record_id: IdArgument, url: UrlOption = DEFAULT_URL,
               key: KeyOption = None) -> None:  # fmt: skip
        with connect(url, key) as client:
            _resource(client, spec).delete(record_id)
        typer.echo(f"Deleted {spec.noun} {record_id}.", err=True)

    delete.__doc__ = f"Delete {spec.a}."


def register(root: typer.Typer, existing: dict[str, typer.Typer]) -> dict[str, typer.Typer]:
    """Add every resource group to `root` (a name that is already a group, `tokens`, gets the
    commands added to that group); the groups by name."""
    groups: dict[str, typer.Typer] = {}
    for spec in SPECS:
        group = existing.get(spec.command)
        if group is None:
            group = typer.Typer(
                help=f"The {spec.noun} records of a running server.", no_args_is_help=True
            )
            root.add_typer(group, name=spec.command)
        add_commands(group, spec)
        groups[spec.command] = group
    return groups

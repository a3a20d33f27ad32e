"""The `tbd-agents` command line. Each command group lives in its own module, registered here."""

from __future__ import annotations

import typer

from tbd_agents.cli import (
    backup,
    db,
    keys,
    migrate,
    models,
    remote_commands,
    serve,
    tokens,
    vectors,
)
from tbd_agents.cli import runtime as runtime_cli

app = typer.Typer(
    name="tbd-agents",
    help="TBD Agents: a self-hosted AI agent hub (agents, tools, knowledge, workflows).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(db.app, name="db")
db.app.command()(backup.backup)
db.app.command()(backup.restore)
app.command()(serve.serve)
app.add_typer(keys.app, name="keys")
app.add_typer(migrate.app, name="migrate")
app.add_typer(models.app, name="models")
app.add_typer(tokens.app, name="tokens")
app.add_typer(vectors.app, name="vectors")
app.command(name="worker")(runtime_cli.worker)
app.command(name="scheduler")(runtime_cli.scheduler)
# Commands that call a running server through the Python client (docs/client.md).
remote_commands.register(app, existing={"tokens": tokens.app})

__all__ = ["app"]

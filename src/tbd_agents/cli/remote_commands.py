"""Registers the commands that call a running server (resources, runs, chat) on the app."""

from __future__ import annotations

import typer

from tbd_agents.cli import chat, resources, runs
from tbd_agents.cli.remote import api_errors


def register(app: typer.Typer, existing: dict[str, typer.Typer]) -> None:
    groups = resources.register(app, existing)
    if "tokens" in existing:  # the key commands' group now also holds the token records
        existing[
            "tokens"
        ].info.help = "Stored tokens (secrets) of a running server, and the keys that encrypt them."
    groups["workflows"].command("run")(api_errors(runs.run_workflow))
    app.add_typer(runs.app, name="runs")
    app.command("chat")(chat.chat)

"""`tbd-agents keys ...`: create, list and revoke API keys (works while the server runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tbd_agents.cli.common import fail, friendly_errors, settings
from tbd_agents.cli.serve import open_cli_store
from tbd_agents.domain.auth import ApiKey, KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.protocol import Query, Sort, eq

app = typer.Typer(help="Manage API keys: every API request needs one.", no_args_is_help=True)


@app.command()
@friendly_errors
def create(
    admin: Annotated[
        bool, typer.Option("--admin", help="Full access to every record and key.")
    ] = False,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Read the owner's records only.")
    ] = False,
    owner: Annotated[
        str | None,
        typer.Option(help="Identity the key acts as (default: admin for --admin, else required)."),
    ] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    github: Annotated[
        bool,
        typer.Option(
            "--github",
            help="The owner is a GitHub login: that login may also sign in with GitHub "
            "(GITHUB_AUTH) as the same identity.",
        ),
    ] = False,
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    if admin and read_only:
        raise fail("choose one of --admin and --read-only")
    scope = KeyScope.ADMIN if admin else KeyScope.READ_ONLY if read_only else KeyScope.USER
    who = owner or ("admin" if admin else None)
    if who is None:
        raise fail("say whom the key is for: --owner NAME (or --admin for an admin key)")

    async def run() -> str:
        async with open_cli_store(settings()) as store, store.unit_of_work() as repos:
            created = await ApiKeys(repos).create(who, scope=scope, name=name, github=github)
            return created.plaintext

    key = asyncio.run(run())
    typer.echo(
        f"Created {scope.value} key for {who}. Store it now; it is not shown again:", err=True
    )
    typer.echo(key)


@app.command("list")
@friendly_errors
def list_keys(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
) -> None:
    """List keys (prefix, owner, scope, last use, revocation); never the keys themselves."""

    async def run() -> list[ApiKey]:
        async with open_cli_store(settings()) as store, store.unit_of_work() as repos:
            filters = (eq("owner", owner),) if owner else ()
            return [
                k
                async for k in repos.for_model(ApiKey).iterate(
                    Query(filters=filters, sort=(Sort("created_at"),))
                )
            ]

    for key in asyncio.run(run()):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        typer.echo(
            f"{key.id}  {key.prefix}…  {key.owner:<20} {key.scope.value:<9} last used {used:<16} {state}  {key.name}"
        )


@app.command()
@friendly_errors
def revoke(
    key: Annotated[str, typer.Argument(help="Key id, or its prefix (tbd_xxxxxxxx).")],
) -> None:
    """Revoke a key: requests with it fail within seconds (at once on the server that revoked it)."""

    async def run() -> ApiKey:
        async with open_cli_store(settings()) as store, store.unit_of_work() as repos:
            repo = repos.for_model(ApiKey)
            found = await repo.find_one(eq("prefix", key)) if key.startswith("tbd_") else None
            record = found or await repo.get(key)
            return await ApiKeys(repos).revoke(record.id, owner=None)

    record = asyncio.run(run())
    typer.echo(f"Revoked {record.prefix}… ({record.owner}).")

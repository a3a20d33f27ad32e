"""`tbd-agents models ...`: the local embedding models in DATA_DIR/models — fetch one once (or
import a copy for a machine without internet), and show what is cached and what is in force."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tbd_agents.cli.common import fail, friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.embeddings import load_embedder
from tbd_agents.embeddings import models as cache
from tbd_agents.embeddings.local import FASTEMBED_DEFAULT_MODEL, FastEmbedEmbedder

app = typer.Typer(
    help=(
        "Local embedding models (fastembed, in DATA_DIR/models): fetch one once, import a copy "
        "for an offline machine, and show what is cached and which model is in force."
    ),
    no_args_is_help=True,
)


def _configured_model(cfg: Settings) -> str:
    """The fastembed model the settings ask for (its default when another provider is set)."""
    provider = cfg.embedding_provider.strip().lower()
    if provider == "fastembed" and cfg.embedding_model:
        return cfg.embedding_model
    return FASTEMBED_DEFAULT_MODEL


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


async def _verify(cfg: Settings, name: str) -> str:
    """Load the cached model as start-up would (no network) and return its space."""
    embedder = await FastEmbedEmbedder.load(
        name,
        cache_dir=cfg.data_dir / "models",
        allow_download=False,
        load_timeout=cfg.embedding_load_timeout,
    )
    return embedder.space.describe()


@app.command()
@friendly_errors
def fetch(
    model: Annotated[
        str | None,
        typer.Option(
            help="fastembed model name (default: EMBEDDING_MODEL when EMBEDDING_PROVIDER="
            "fastembed, else BAAI/bge-small-en-v1.5).",
            show_default=False,
        ),
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Import from this directory instead of downloading: the model's files, or a "
            "DATA_DIR/models copied from a machine that downloaded it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Put a fastembed model into DATA_DIR/models and check that it loads offline.

    Without --from it is downloaded (progress bars on stderr), even when
    EMBEDDING_ALLOW_DOWNLOAD=false: running this command is the permission. Later starts load
    it from disk without network."""
    cfg = settings()
    name = cache.describe(model or _configured_model(cfg)).name
    directory = cfg.data_dir / "models"
    directory.mkdir(parents=True, exist_ok=True)
    if from_dir is not None:
        found = cache.import_model(directory, name, from_dir.expanduser())
        try:
            space = asyncio.run(_verify(cfg, name))
        except cache.ModelUnavailable as exc:
            shutil.rmtree(found.path, ignore_errors=True)
            raise fail(
                f"the imported copy does not load, so it was removed again: {exc.message}"
            ) from None
        typer.echo(f"Imported {name} into {found.path} ({_mb(found.size_bytes)}): {space}.")
        return
    existing = cache.find_local(directory, name)
    if existing is None:
        existing = cache.download(directory, name, cfg.embedding_download_timeout)
    else:
        typer.echo(f"{name} is already in {existing.path}; nothing to download.", err=True)
    space = asyncio.run(_verify(cfg, name))
    typer.echo(f"{name} ready in {existing.path} ({_mb(existing.size_bytes)}): {space}.")


@app.command("list")
@friendly_errors
def list_models() -> None:
    """The models fastembed can use, their size, and which are cached here."""
    cfg = settings()
    directory = cfg.data_dir / "models"
    configured = _configured_model(cfg).lower()
    cached = {m.name.lower(): m for m in cache.cached_models(directory)}
    table = Table("model", "dimensions", "download", "cached here", "")
    for key, model in sorted(cache.fastembed_models().items()):
        here = cached.get(key)
        table.add_row(
            model.name,
            str(model.dimension),
            f"{model.size_gb * 1000:.0f} MB",
            f"{here.origin}, {_mb(here.size_bytes)}" if here else "",
            "configured" if key == configured else "",
        )
    Console().print(table)


async def _in_force(cfg: Settings) -> tuple[bool, str]:
    choice = await load_embedder(cfg.model_copy(update={"embedding_allow_download": False}))
    return choice.fell_back, choice.message


@app.command()
@friendly_errors
def status() -> None:
    """What DATA_DIR/models holds and which embedder start-up would use (checked by loading it,
    without downloading anything)."""
    cfg = settings()
    directory = cfg.data_dir / "models"
    table = Table("cached model", "from", "size", "path")
    for found in cache.cached_models(directory):
        table.add_row(found.name, found.origin, _mb(found.size_bytes), str(found.path))
    console = Console()
    if table.row_count:
        console.print(table)
    else:
        console.print(f"No fastembed model is cached in {directory}.")
    fell_back, message = asyncio.run(_in_force(cfg))
    console.print(message, style="yellow" if fell_back else "green", markup=False, soft_wrap=True)
    if fell_back and cfg.embedding_allow_download:
        console.print(
            "(EMBEDDING_ALLOW_DOWNLOAD=true: the next start fetches the model if it can reach "
            "the hub; `tbd-agents models fetch` does it now.)",
            soft_wrap=True,
        )

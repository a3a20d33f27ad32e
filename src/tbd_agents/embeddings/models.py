"""The local model cache in DATA_DIR/models: where a fastembed model lies, fetching it once, and
importing a copy brought from another machine.

Two layouts are recognised, both under the cache directory:

* fastembed's own download cache (Hugging Face hub layout): `models--<org>--<repo>/snapshots/
  <revision>/` holding the ONNX file and the tokenizer files;
* an imported copy: `imported/<org>__<name>/` holding the same files flat. `tbd-agents models
  fetch --from DIR` writes it; the loader passes it to fastembed as `specific_model_path`.

Once a model is present it is always loaded from disk with `local_files_only`, so a start-up never
touches the network again. A download happens only when the model is missing and downloads are
allowed; it first checks within a few seconds that the hub answers at all (an offline machine then
falls back at once instead of waiting for retries), runs in a daemon thread bounded by
EMBEDDING_DOWNLOAD_TIMEOUT, and shows the hub library's tqdm progress bars on stderr.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tbd_agents.embeddings.base import EmbeddingError

T = TypeVar("T")

#: Seconds allowed for the check that the model hub answers before a download starts.
REACHABILITY_TIMEOUT = 5.0
#: Files besides the ONNX graph that a fastembed text model needs (the tokenizer's).
TOKENIZER_FILES = ("tokenizer.json", "config.json")
_OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_OFFLINE_VALUES = {"1", "TRUE", "YES", "ON"}
#: Why a download failed, by model, in this process: start-up tries once (prefetch, then the
#: load would try again), and an offline machine must not wait for the timeout twice.
_FAILED: dict[str, str] = {}
PRELOAD_HINT = (
    "to pre-load it on a machine without internet, run `tbd-agents models fetch` on a machine "
    "with internet and copy its DATA_DIR/models directory over (or copy the model's directory "
    "and run `tbd-agents models fetch --model NAME --from DIR`)"
)


class ModelUnavailable(EmbeddingError):
    """The configured model could not be loaded (not installed, not cached, or timed out)."""

    code = "embedding_model_unavailable"


@dataclass(frozen=True, slots=True)
class FastEmbedModel:
    """What fastembed knows about one of its text models."""

    name: str
    model_file: str
    additional_files: tuple[str, ...]
    hf_repo: str | None
    dimension: int
    size_gb: float

    @property
    def required_files(self) -> tuple[str, ...]:
        return (self.model_file, *self.additional_files, *TOKENIZER_FILES)


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A model found on disk: its directory and how it got there (`download` or `imported`)."""

    name: str
    path: Path
    origin: str
    size_bytes: int


def fastembed_installed() -> bool:
    return importlib.util.find_spec("fastembed") is not None


def fastembed_models() -> dict[str, FastEmbedModel]:
    """fastembed's text models by lower-case name (empty when fastembed is not installed)."""
    if not fastembed_installed():
        return {}
    from fastembed import TextEmbedding

    out = {}
    for entry in TextEmbedding.list_supported_models():
        sources = entry.get("sources") or {}
        model = FastEmbedModel(
            name=str(entry["model"]),
            model_file=str(entry.get("model_file") or "model.onnx"),
            additional_files=tuple(entry.get("additional_files") or ()),
            hf_repo=sources.get("hf"),
            dimension=int(entry.get("dim") or 0),
            size_gb=float(entry.get("size_in_GB") or 0.0),
        )
        out[model.name.lower()] = model
    return out


def describe(name: str) -> FastEmbedModel:
    """fastembed's description of `name`, or ModelUnavailable naming what to do instead."""
    if not fastembed_installed():
        raise ModelUnavailable(
            "the fastembed package is not installed (it is a dependency of tbd-agents: "
            "reinstall with `pip install tbd-agents`)"
        )
    known = fastembed_models()
    model = known.get(name.lower())
    if model is None:
        raise ModelUnavailable(
            f"fastembed does not know the model {name!r}; it knows e.g. BAAI/bge-small-en-v1.5 "
            "and sentence-transformers/all-MiniLM-L6-v2. For another model use "
            "EMBEDDING_PROVIDER=sentence_transformers with EMBEDDING_MODEL=<name or path>"
        )
    return model


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _complete(directory: Path, model: FastEmbedModel) -> bool:
    return all((directory / f).is_file() for f in model.required_files)


def imported_dir(cache_dir: Path, name: str) -> Path:
    return cache_dir / "imported" / name.replace("/", "__")


def _snapshots(root: Path, model: FastEmbedModel) -> list[Path]:
    """Complete snapshot directories of `model` in a hub-layout cache rooted at `root`."""
    if model.hf_repo is None or not root.is_dir():
        return []
    folder = "models--" + model.hf_repo.replace("/", "--")
    found = []
    for entry in root.iterdir():
        if entry.name.lower() == folder.lower() and (entry / "snapshots").is_dir():
            found += [s for s in sorted((entry / "snapshots").iterdir()) if _complete(s, model)]
    return found


def find_local(cache_dir: Path, name: str) -> LocalModel | None:
    """Where `name` lies in `cache_dir` (an imported copy wins over a download), if anywhere."""
    model = describe(name)
    imported = imported_dir(cache_dir, model.name)
    if _complete(imported, model):
        return LocalModel(model.name, imported, "imported", _size(imported))
    for snapshot in _snapshots(cache_dir, model):
        return LocalModel(model.name, snapshot, "download", _size(snapshot.parent.parent))
    return None


def cached_models(cache_dir: Path) -> list[LocalModel]:
    """Every fastembed model present in `cache_dir`."""
    return [
        found
        for model in fastembed_models().values()
        if (found := find_local(cache_dir, model.name))
    ]


def import_model(cache_dir: Path, name: str, source: Path) -> LocalModel:
    """Copy the model files of `name` from `source` into the cache's imported layout.

    `source` may be the model's own directory (files flat) or a hub-layout cache that holds it
    (e.g. another machine's DATA_DIR/models). The copy is written next to its place and renamed
    into it, so a failed import never leaves half a model behind."""
    model = describe(name)
    if not source.is_dir():
        raise ModelUnavailable(f"{source} is not a directory")
    candidates = [source] if _complete(source, model) else _snapshots(source, model)
    if not candidates:
        missing = [f for f in model.required_files if not (source / f).is_file()]
        raise ModelUnavailable(
            f"{source} does not hold the files of {model.name}: missing "
            + ", ".join(missing)
            + " (give the directory that holds them, or a DATA_DIR/models copied from a machine "
            "that downloaded the model)"
        )
    origin = candidates[0]
    target = imported_dir(cache_dir, model.name)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        for file in (*model.required_files, *_OPTIONAL_FILES):
            if (origin / file).is_file():
                (staging / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin / file, staging / file)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return LocalModel(model.name, target, "imported", _size(target))


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network access at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE_VALUES


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check_reachable(timeout: float = REACHABILITY_TIMEOUT) -> None:
    """Raise ModelUnavailable unless the model hub answers HTTP within `timeout` seconds."""
    import httpx

    endpoint = hub_endpoint()
    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ModelUnavailable(
            f"the model hub {endpoint} did not answer within {timeout:g} s "
            f"({type(exc).__name__}: {exc or 'no detail'}); this machine seems offline"
        ) from None


def run_bounded(what: str, seconds: float, fn: Callable[[], T]) -> T:
    """`fn()` in a daemon thread, waited for at most `seconds`.

    A daemon thread, not an executor's, because a stuck network read must not keep the process
    alive at exit; after a timeout the thread is abandoned (its partial download stays as an
    `.incomplete` file that the next attempt resumes)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the waiting caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"tbd-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ModelUnavailable(f"{what} took longer than {seconds:g} s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, ModelUnavailable):
            raise error
        raise ModelUnavailable(f"{what} failed: {error}") from error
    value: T = box["value"]
    return value


def download(cache_dir: Path, name: str, timeout: float) -> LocalModel:
    """Fetch `name` from the hub into `cache_dir` once (progress bars on stderr), bounded by
    `timeout` seconds; ModelUnavailable with the reason and how to pre-load when it fails."""
    model = describe(name)
    if hub_offline():
        raise ModelUnavailable(
            f"{model.name} is not in {cache_dir} and HF_HUB_OFFLINE forbids downloading it; "
            + PRELOAD_HINT
        )
    if model.name in _FAILED:
        raise ModelUnavailable(_FAILED[model.name])
    print(
        f"Embeddings: fetching {model.name} once into {cache_dir} (up to {timeout:g} s; later "
        "starts load it from there without network)...",
        file=sys.stderr,
        flush=True,
    )
    try:
        check_reachable()

        def fetch() -> None:
            from fastembed import TextEmbedding

            TextEmbedding(model.name, cache_dir=str(cache_dir), lazy_load=True)

        run_bounded(f"downloading {model.name} (EMBEDDING_DOWNLOAD_TIMEOUT)", timeout, fetch)
    except ModelUnavailable as exc:
        _FAILED[model.name] = f"{exc.message}; {PRELOAD_HINT}"
        raise ModelUnavailable(_FAILED[model.name]) from exc
    found = find_local(cache_dir, model.name)
    if found is None:
        raise ModelUnavailable(
            f"the download of {model.name} finished but its files are not in {cache_dir}; "
            + PRELOAD_HINT
        )
    return found

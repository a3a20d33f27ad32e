"""Settings of embeddings, knowledge chunking and retrieval, and agent memory."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class KnowledgeSettings(BaseSettings):
    """The embedding model, knowledge chunks and what a run recalls.

    Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    # --- embeddings, knowledge and memory ---------------------------------------------------
    embedding_provider: str = Field(
        default="fastembed",
        description="fastembed, sentence_transformers, openai (any OpenAI-compatible /embeddings) "
        "or hashing (offline, no model). A model that cannot be loaded falls back to hashing, "
        "and start-up says so.",
    )
    embedding_model: str | None = Field(
        default=None,
        description="Model name or local path; unset: the provider's default "
        "(fastembed: BAAI/bge-small-en-v1.5).",
    )
    embedding_dimensions: int | None = Field(
        default=None, ge=1, le=16000, description="Vector size; unset: the model's own."
    )
    embedding_base_url: str | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API (…/v1) for `openai`."
    )
    embedding_api_key: SecretStr | None = Field(
        default=None, description="API key for EMBEDDING_BASE_URL."
    )
    embedding_batch_size: int = Field(
        default=64, ge=1, le=4096, description="Texts per embedding call."
    )
    embedding_allow_download: bool = Field(
        default=True,
        description="Let fastembed / sentence-transformers download a model that is not cached "
        "yet, once, into DATA_DIR/models (later starts load it from there without network). "
        "Off: only local files are used; pre-load with `tbd-agents models fetch`.",
    )
    embedding_download_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds allowed for that one-time model download (an unreachable hub is "
        "detected within 5 s); on expiry start-up falls back to the hashing embedder.",
    )
    embedding_load_timeout: float = Field(
        default=120.0, gt=0, description="Seconds allowed for loading an embedding model."
    )
    knowledge_chunk_size: int = Field(
        default=1200, ge=100, le=100_000, description="Target characters per knowledge chunk."
    )
    knowledge_chunk_overlap: int = Field(
        default=150, ge=0, le=10_000, description="Characters repeated between adjacent chunks."
    )
    stm_max_entries: int = Field(
        default=20,
        ge=0,
        description="An agent's most recently written memories recalled into each run beside "
        "the semantic matches (the existing short-term memory; 0: off).",
    )
    memory_max_per_agent: int = Field(
        default=1000,
        ge=0,
        description="Memories kept per agent; the oldest are evicted (0: no cap).",
    )
    memory_retrieval_top_k: int = Field(
        default=8, ge=0, le=1000, description="Memories recalled into a run's prompt."
    )
    knowledge_retrieval_top_k: int = Field(
        default=5, ge=0, le=1000, description="Knowledge passages retrieved into a run's prompt."
    )
    memory_expiry_sweep_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often the API server deletes expired memories with their vectors "
        "(0: never; expired memories are hidden from search either way).",
    )

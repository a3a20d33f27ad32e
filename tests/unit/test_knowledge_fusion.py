"""The fusion rules of hybrid retrieval (knowledge/fusion.py), without a store."""

from __future__ import annotations

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.knowledge.fusion import (
    LEXICAL,
    SEMANTIC,
    FusionWeights,
    KeywordHit,
    fuse,
    named_terms,
    weights_for,
)
from tbd_agents.vectors.base import VectorHit


def hit(i: str) -> VectorHit:
    return VectorHit(i, 1.0, i, {})


def test_named_terms_are_identifiers_codes_and_names_not_prose() -> None:
    assert named_terms("How do I bail out of a repetition before it has finished?") == []
    assert named_terms("What is PYTHONHASHSEED? And E1234 in max_tokens, from Northwind.") == [
        "PYTHONHASHSEED",
        "E1234",
        "max_tokens",
        "Northwind",
    ]
    # Capitalised at the start of a sentence is prose; CamelCase anywhere is a name.
    assert named_terms("Where does BlockingIOError come up? Often.") == ["BlockingIOError"]
    assert named_terms("I think so") == []


def test_weights_follow_the_embedding_space() -> None:
    assert weights_for(HashingEmbedder(64).space) == LEXICAL
    assert weights_for(EmbeddingSpace("sentence-transformers/all-MiniLM-L6-v2", 384)) == SEMANTIC


def test_a_loose_keyword_hit_cannot_lift_a_chunk_over_the_vector_favourite() -> None:
    vector = [hit("right"), hit("noise")]
    keyword = [KeywordHit(hit("noise"), strict=False)]
    assert [i for i, _ in fuse(vector, keyword, SEMANTIC)] == ["right", "noise"]
    # With equal weights (the old fusion) the noise chunk wins: what this rule prevents.
    assert [i for i, _ in fuse(vector, keyword, LEXICAL)] == ["noise", "right"]


def test_a_strict_keyword_hit_counts_fully_and_zero_weight_hits_are_left_out() -> None:
    vector = [hit(f"v{i}") for i in range(1, 6)]
    keyword = [KeywordHit(hit("code"), strict=True), KeywordHit(hit("other"), strict=False)]
    fused = [i for i, _ in fuse(vector, keyword, SEMANTIC)]
    assert fused[:2] == ["code", "v1"] or fused[:2] == ["v1", "code"]
    assert "other" not in fused
    half = [i for i, _ in fuse(vector, keyword, FusionWeights(strict=0.5))]
    assert half.index("code") > half.index("v5")

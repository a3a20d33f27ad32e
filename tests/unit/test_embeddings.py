"""Embedders: the offline hashing embedder, an OpenAI-compatible endpoint served by a local HTTP
server, and the start-up fallback when a model cannot be loaded."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.config import Settings
from tbd_agents.domain.models import Provider
from tbd_agents.embeddings import HashingEmbedder, load_embedder
from tbd_agents.embeddings.base import EmbeddingError
from tbd_agents.embeddings.hashing import words
from tbd_agents.embeddings.openai import OpenAICompatibleEmbedder, embedder_from_provider
from tbd_agents.errors import ConfigurationError


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_is_deterministic_normalised_and_sized() -> None:
    emb = HashingEmbedder(384)
    v1, v2 = await emb.embed(["The refund policy lasts 30 days", "The refund policy lasts 30 days"])
    assert v1 == v2
    assert len(v1) == 384
    assert math.isclose(sum(x * x for x in v1), 1.0, rel_tol=1e-9)
    other = HashingEmbedder(384)
    assert await other.embed_query("The refund policy lasts 30 days") == v1
    assert emb.space.model == "tbd-hashing-v1"
    assert emb.space.dimension == 384


async def test_hashing_similarity_follows_shared_words_and_inflections() -> None:
    emb = HashingEmbedder(384)
    q, near, far = await emb.embed(
        [
            "how do I reset my password?",
            "Resetting passwords: open settings and choose reset password.",
            "Quarterly revenue grew in the northern region.",
        ]
    )
    assert cosine(q, near) > 0.3
    assert cosine(q, near) > cosine(q, far) + 0.2
    assert words("Passwords resetting") == ["password", "resett"]


async def test_hashing_empty_text_gives_a_usable_unit_vector() -> None:
    (vec,) = await HashingEmbedder(64).embed([""])
    assert math.isclose(sum(x * x for x in vec), 1.0)


def test_hashing_refuses_tiny_dimension() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        HashingEmbedder(8)


class _FakeEmbeddingsAPI(BaseHTTPRequestHandler):
    """A small OpenAI-compatible /v1/embeddings endpoint: vectors derived from the text length,
    returned in reverse order with their `index` (clients must reorder)."""

    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if self.headers.get("Authorization") != "Bearer sk-test":
            self._send(401, {"error": {"message": "bad key"}})
            return
        if self.path != "/v1/embeddings":
            self._send(404, {"error": "no route"})
            return
        dim = body.get("dimensions", 8)
        data = [
            {"index": i, "embedding": [float(len(text) + 1)] + [1.0] * (dim - 1)}
            for i, text in enumerate(body["input"])
        ]
        self._send(200, {"data": list(reversed(data)), "model": body["model"]})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def embeddings_api() -> Iterator[str]:
    _FakeEmbeddingsAPI.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddingsAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def test_openai_compatible_batches_orders_and_probes_dimension(embeddings_api: str) -> None:
    emb = await OpenAICompatibleEmbedder.connect(
        base_url=embeddings_api, model="text-embed-x", api_key="sk-test", batch_size=2
    )
    assert emb.space.dimension == 8  # found by one probe call
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await emb.embed(texts)
    assert len(vectors) == 5
    # reordered by index: the first component grows with the text length
    firsts = [v[0] / v[1] for v in vectors]
    assert firsts == [2.0, 3.0, 4.0, 5.0, 6.0]
    posts = _FakeEmbeddingsAPI.calls[1:]
    assert [len(c["body"]["input"]) for c in posts] == [2, 2, 1]
    assert all(c["body"]["model"] == "text-embed-x" for c in posts)
    await emb.aclose()


async def test_openai_compatible_sends_configured_dimensions(embeddings_api: str) -> None:
    emb = await OpenAICompatibleEmbedder.connect(
        base_url=embeddings_api, model="m", api_key="sk-test", dimension=16
    )
    (vec,) = await emb.embed(["hello"])
    assert len(vec) == 16
    assert _FakeEmbeddingsAPI.calls[-1]["body"]["dimensions"] == 16
    await emb.aclose()


async def test_openai_compatible_errors_name_the_endpoint_and_fix(embeddings_api: str) -> None:
    bad_key = OpenAICompatibleEmbedder(
        base_url=embeddings_api, model="m", dimension=8, api_key="wrong"
    )
    with pytest.raises(EmbeddingError, match=r"refused the credentials \(HTTP 401\)"):
        await bad_key.embed(["x"])
    closed = OpenAICompatibleEmbedder(base_url="http://127.0.0.1:9/v1", model="m", dimension=8)
    with pytest.raises(EmbeddingError, match=r"unreachable.*EMBEDDING_BASE_URL"):
        await closed.embed(["x"])


async def test_embedder_from_stored_provider(embeddings_api: str) -> None:
    provider = Provider(name="local-openai", base_url=embeddings_api)
    emb = await embedder_from_provider(provider, "sk-test", model="m", dimension=8)
    assert len(await emb.embed_query("hi")) == 8
    with pytest.raises(EmbeddingError, match="has no base_url"):
        await embedder_from_provider(Provider(name="p"), None, model="m")


async def test_unloadable_fastembed_falls_back_quickly_and_says_so(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedding_provider="fastembed")
    started = time.monotonic()
    choice = await load_embedder(settings)
    assert time.monotonic() - started < 30
    assert choice.fell_back
    assert choice.requested == "fastembed"
    assert choice.embedder.space.model == "tbd-hashing-v1"
    assert "fastembed" in choice.message
    assert "Falling back to the offline hashing embedder" in choice.message
    assert "EMBEDDING_ALLOW_DOWNLOAD" in choice.message
    assert not any((tmp_path / "models").rglob("*.onnx"))  # nothing was downloaded


async def test_factory_builds_openai_and_hashing(embeddings_api: str, tmp_path: Path) -> None:
    choice = await load_embedder(
        Settings(
            data_dir=tmp_path,
            embedding_provider="openai",
            embedding_base_url=embeddings_api,
            embedding_model="m",
            embedding_api_key="sk-test",
        )
    )
    assert not choice.fell_back
    assert choice.embedder.space.dimension == 8
    hashing = await load_embedder(Settings(data_dir=tmp_path, embedding_provider="hashing"))
    assert hashing.embedder.space.describe() == "'tbd-hashing-v1' (384 dimensions)"


async def test_factory_rejects_nonsense_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="EMBEDDING_PROVIDER='word2vec' is not known"):
        await load_embedder(Settings(data_dir=tmp_path, embedding_provider="word2vec"))
    with pytest.raises(ConfigurationError, match="needs EMBEDDING_BASE_URL"):
        await load_embedder(Settings(data_dir=tmp_path, embedding_provider="openai"))

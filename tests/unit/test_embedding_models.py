"""The local model cache (embeddings/models.py), the one-time download's offline fallback, and
`tbd-agents models`: all without a real model and without network (the download path is driven
against a closed local port, so nothing can be fetched even by mistake)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.config import Settings
from tbd_agents.embeddings import load_embedder
from tbd_agents.embeddings import models as cache
from tbd_agents.embeddings.factory import prefetch_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REPO = "models--Qdrant--all-MiniLM-L6-v2-onnx"
runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no remembered download failure."""
    monkeypatch.setattr(cache, "_FAILED", {})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_model_dir(directory: Path, onnx: bytes = b"not an onnx graph") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx)
    (directory / "tokenizer.json").write_text("{}")
    (directory / "config.json").write_text("{}")
    return directory


def test_tests_never_download_but_the_product_default_does() -> None:
    """conftest turns downloads off for the whole suite; the shipped default is on."""
    assert Settings.model_fields["embedding_allow_download"].default is True
    assert Settings().embedding_allow_download is False
    assert cache.hub_offline()


def test_import_names_the_missing_files_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    (source / "tokenizer.json").write_text("{}")
    with pytest.raises(cache.ModelUnavailable, match=r"missing model\.onnx, config\.json"):
        cache.import_model(tmp_path / "models", MINILM, source)
    assert not (tmp_path / "models" / "imported").exists() or not any(
        (tmp_path / "models" / "imported").iterdir()
    )
    with pytest.raises(cache.ModelUnavailable, match="is not a directory"):
        cache.import_model(tmp_path / "models", MINILM, tmp_path / "nowhere")
    with pytest.raises(cache.ModelUnavailable, match="fastembed does not know the model"):
        cache.import_model(tmp_path / "models", "word2vec/google-news", source)


def test_downloads_and_imports_are_found_in_both_layouts(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert cache.find_local(models, MINILM) is None
    fake_model_dir(models / MINILM_REPO / "snapshots" / "abc123")
    found = cache.find_local(models, MINILM)
    assert found is not None and found.origin == "download"
    assert found.path == models / MINILM_REPO / "snapshots" / "abc123"
    # Another machine's DATA_DIR/models given to --from: the snapshot inside it is imported.
    other = tmp_path / "other"
    imported = cache.import_model(other, MINILM, models)
    assert imported.origin == "imported"
    assert (imported.path / "model.onnx").read_bytes() == b"not an onnx graph"
    assert cache.find_local(other, MINILM) == imported
    assert [m.name for m in cache.cached_models(other)] == [MINILM]


def test_offline_hub_fails_at_once_with_the_preload_hint(tmp_path: Path) -> None:
    with pytest.raises(cache.ModelUnavailable, match="HF_HUB_OFFLINE forbids") as raised:
        cache.download(tmp_path, MINILM, timeout=600)
    assert "tbd-agents models fetch" in raised.value.message


async def test_unreachable_hub_falls_back_quickly_and_says_how_to_preload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    settings = Settings(data_dir=tmp_path, embedding_allow_download=True)
    started = time.monotonic()
    choice = await load_embedder(settings)
    assert time.monotonic() - started < 60
    assert choice.fell_back and choice.embedder.space.model == "tbd-hashing-v1"
    assert "did not answer within 5 s" in choice.message
    assert "tbd-agents models fetch" in choice.message
    assert "--from DIR" in choice.message
    assert not any((tmp_path / "models").rglob("*.onnx"))
    # The same process does not wait again (start-up's prefetch, then the load).
    again = time.monotonic()
    assert (await load_embedder(settings)).fell_back
    assert time.monotonic() - again < 5


def test_prefetch_logs_and_returns_when_the_hub_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with caplog.at_level(logging.WARNING, logger="tbd_agents.embeddings.factory"):
        prefetch_model(Settings(data_dir=tmp_path, embedding_allow_download=True))
    assert "could not fetch BAAI/bge-small-en-v1.5" in caplog.text
    caplog.clear()
    prefetch_model(Settings(data_dir=tmp_path, embedding_provider="hashing"))
    prefetch_model(Settings(data_dir=tmp_path))  # downloads off (the test default)
    assert caplog.text == ""


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_models_status_without_a_model_shows_the_fallback(data_dir: Path) -> None:
    shown = runner.invoke(app, ["models", "status"])
    assert shown.exit_code == 0, shown.output
    output = " ".join(shown.output.split())
    assert "No fastembed model is cached" in output
    assert "Falling back to the offline hashing embedder" in output
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "configured" in listed.output


def test_models_fetch_refuses_what_it_cannot_use(data_dir: Path) -> None:
    unknown = runner.invoke(app, ["models", "fetch", "--model", "word2vec/google-news"])
    assert unknown.exit_code == 1
    assert "fastembed does not know the model 'word2vec/google-news'" in unknown.output
    offline = runner.invoke(app, ["models", "fetch"])
    assert offline.exit_code == 1
    assert "HF_HUB_OFFLINE forbids" in " ".join(offline.output.split())
    broken = fake_model_dir(data_dir / "copy")
    bad = runner.invoke(app, ["models", "fetch", "--model", MINILM, "--from", str(broken)])
    assert bad.exit_code == 1
    assert "does not load, so it was removed again" in " ".join(bad.output.split())
    assert cache.find_local(data_dir / "models", MINILM) is None

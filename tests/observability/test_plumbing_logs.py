"""LOG_FORMAT: JSON lines with the span and the context fields, secrets still masked; the text
format as before by default; the caller's identity bound by the API's authentication."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tbd_agents.api.deps import Caller
from tbd_agents.config import Settings
from tbd_agents.logs import install_redaction
from tbd_agents.observability import logctx
from tbd_agents.observability.jsonlog import JsonFormatter
from tests.api.conftest import Api
from tests.observability.conftest import loopback_client

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "sk-" + "Q" * 32


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines to a buffer (redaction installed, as every entry point does)."""
    install_redaction()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.observability.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_record_carries_the_span_and_the_context_fields(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    tracer = TracerProvider().get_tracer("tests")
    with (
        logctx.bind(user="alice", run_id="run-1", agent_id="agent-7", workflow_id=None),
        tracer.start_as_current_span("work") as span,
    ):
        logger.info("step %d of %s", 2, "run")
    logger.warning("outside")
    inside, outside = lines(buffer)
    context = span.get_span_context()
    assert inside["message"] == "step 2 of run"
    assert inside["level"] == "INFO" and inside["logger"] == "tests.observability.json"
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert (inside["user"], inside["run_id"], inside["agent_id"]) == ("alice", "run-1", "agent-7")
    assert "workflow_id" not in inside
    assert str(inside["timestamp"]).endswith("Z") and "T" in str(inside["timestamp"])
    assert not {"trace_id", "span_id", "user", "run_id"} & set(outside)


def test_secrets_stay_masked_in_message_and_exception(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    try:
        raise RuntimeError(f"provider refused key {SECRET_KEY}")
    except RuntimeError:
        logger.exception("call with Authorization: Bearer %s failed", SECRET_KEY)
    [record] = lines(buffer)
    text = json.dumps(record)
    assert SECRET_KEY not in text
    assert "***" in str(record["message"])
    assert "RuntimeError" in str(record["exception"]) and "***" in str(record["exception"])


def _log_in_subprocess(tmp_path: Path, **env: str) -> str:
    script = (
        "import logging\n"
        "from tbd_agents.config import load_settings\n"
        "from tbd_agents.logs import configure_logging\n"
        "configure_logging(load_settings())\n"
        "logging.getLogger('tbd_agents.demo').warning('hello %s', 'world')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path),
             "DATA_DIR": str(tmp_path), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stderr.strip()


def test_text_is_the_default_and_unchanged(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).log_format == "text"
    line = _log_in_subprocess(tmp_path)
    assert line.endswith(" WARNING tbd_agents.demo: hello world")


def test_json_lines_on_request(tmp_path: Path) -> None:
    line = _log_in_subprocess(tmp_path, LOG_FORMAT="json")
    record = json.loads(line)
    assert record["message"] == "hello world" and record["level"] == "WARNING"


async def test_the_api_binds_the_caller_for_the_request_logs(obs_api: Api) -> None:
    key = await obs_api.key("carol-obs")
    seen: list[dict[str, str]] = []

    @obs_api.app.get("/test-obs/whoami", include_in_schema=False)
    async def whoami(caller: Caller) -> None:
        seen.append(logctx.current())

    async with loopback_client(obs_api.app, key) as client:
        assert (await client.get("/test-obs/whoami")).status_code == 200
    assert seen[0]["user"] == "carol-obs"

"""The client's parts without a server: SSE framing, error decoding, URLs, answers of every
kind, transport failures, and the official SDK's import paths."""

from __future__ import annotations

import httpx
import pytest

from tbd_agents.client import ApiError, TbdAgentsClient, TransportError, iter_sse_messages


def test_sse_framing() -> None:
    lines = [
        ": keepalive",
        "id: 7",
        "event: delta",
        'data: {"a":',
        "data:1}",
        "retry: 50",
        "",
        "",
        "data: last, without a blank line",
    ]
    first, last = list(iter_sse_messages(lines))
    assert (first.event_id, first.event, first.retry) == ("7", "delta", 50)
    assert first.data == '{"a":\n1}'
    assert last.data == "last, without a blank line" and last.event is None


def mock(handler: object) -> TbdAgentsClient:
    return TbdAgentsClient(
        base_url="https://hub.example/api/", token="k", transport=httpx.MockTransport(handler)
    )


def test_answers_errors_and_urls() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization")))
        answers = {
            "/api/empty": httpx.Response(204),
            "/api/text": httpx.Response(200, text="plain", headers={"content-type": "text/plain"}),
            "/api/json": httpx.Response(200, json={"x": 1}),
            "/api/ours": httpx.Response(
                404, json={"detail": "agent not found", "error": {"code": "not_found"}}
            ),
            "/api/list": httpx.Response(500, json=["broken"]),
            "/api/gateway": httpx.Response(502, text="gateway failed"),
            "/health": httpx.Response(200, json={"status": "ok"}),
        }
        return answers[request.url.path]

    with mock(handler) as client:
        assert (client.base_url, client.api_base_url) == (
            "https://hub.example",
            "https://hub.example/api",
        )
        assert client.request("GET", "/empty") is None
        assert client.request("GET", "text") == "plain"
        assert client.request("GET", "/json") == {"x": 1}
        assert client.health.get().status == "ok"
        with pytest.raises(ApiError) as ours:
            client.request("GET", "/ours")
        assert (ours.value.status_code, ours.value.detail, ours.value.code) == (
            404, "agent not found", "not_found",
        )  # fmt: skip
        with pytest.raises(ApiError, match=r"\['broken'\]") as listed:
            client.request("GET", "/list")
        assert listed.value.code is None
        with pytest.raises(ApiError, match="gateway failed") as text:
            client.request("GET", "/gateway")
        assert text.value.body == "gateway failed"
    assert seen[0] == ("/api/empty", "Bearer k")
    assert ("/health", "Bearer k") in seen


def test_transport_failures_and_bad_urls() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with mock(refuse) as client:
        with pytest.raises(TransportError, match="refused") as failed:
            client.agents.list()
        assert isinstance(failed.value.cause, httpx.ConnectError)
        with pytest.raises(TransportError), client.stream("GET", "/workflows/w/stream"):
            pass
    for bad in ("", "hub.example", "ftp://hub.example"):
        with pytest.raises(ValueError):
            TbdAgentsClient(base_url=bad)


def test_the_official_sdk_import_paths() -> None:
    from tbd_agents import ApiError as top_level
    from tbd_agents.exceptions import ApiError as from_exceptions
    from tbd_agents.exceptions import TbdAgentsError
    from tbd_agents.types import TaskStatus, WorkflowCreate

    assert top_level is from_exceptions is ApiError and issubclass(ApiError, TbdAgentsError)
    body = WorkflowCreate(agent_id="a", title="t")
    assert body.model_dump(mode="json", exclude_unset=True) == {"agent_id": "a", "title": "t"}
    assert TaskStatus("completed") is TaskStatus.COMPLETED

"""The "try it" endpoints: MCP test connection, custom tool validate / run, guardrail try."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.factory import uniq
from tests.engine.mcp_fixtures import SERVERS, http_server

SECRET = "s3cret-value-for-tests"


async def _create(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(url, json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _token(client: httpx.AsyncClient) -> str:
    name = uniq("tok").replace("-", "_")
    await _create(client, "/api/tokens", {"name": name, "value": SECRET})
    return name


def _stdio(script: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(SERVERS / script), "stdio"], **extra}


# --- MCP -----------------------------------------------------------------------------------
async def test_mcp_test_lists_tools_with_allowlist_and_records_status(
    admin: httpx.AsyncClient,
) -> None:
    # An admin's server runs unconfined, so it can load its script from the test tree (a
    # user's allow-listed server runs confined: tests/engine/test_sandbox.py).
    token = await _token(admin)
    server = await _create(
        admin,
        "/api/mcps",
        {
            "name": uniq("mcp"),
            "connection_config": _stdio("demo_mcp.py", env={"DEMO_KEY": "{{token:" + token + "}}"}),
            "allowed_tools": ["add"],
        },
    )
    resp = await admin.post(f"/api/mcps/{server['id']}/test")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ok"] is True
    assert body["error"] is None
    assert body["latency_ms"] > 0
    tools = {t["name"]: t for t in body["tools"]}
    assert {"add", "lookup_order", "environment"} <= set(tools)
    assert tools["add"]["allowed"] is True
    assert tools["lookup_order"]["allowed"] is False
    assert tools["add"]["description"]
    assert SECRET not in resp.text
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "connected"
    assert record["last_error"] is None


@pytest.fixture(scope="module")
def streamable_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


async def test_mcp_test_over_the_existing_http_transport(
    admin: httpx.AsyncClient, streamable_url: str
) -> None:
    """`http` is the existing name of the streamable HTTP transport; `registered` (the default
    status of a new record) becomes `connected` once a test succeeds."""
    server = await _create(
        admin,
        "/api/mcps",
        {
            "name": uniq("mcp"),
            "transport_type": "http",
            "connection_config": {"url": streamable_url, "headers": {}},
        },
    )
    assert server["transport_type"] == "http" and server["status"] == "registered"
    body = (await admin.post(f"/api/mcps/{server['id']}/test")).json()
    assert body["ok"] is True, body
    assert "add" in {t["name"] for t in body["tools"]}
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "connected" and record["transport_type"] == "http"


async def test_mcp_test_of_a_broken_server_is_ok_false(admin: httpx.AsyncClient) -> None:
    # an admin's server: a command outside USER_STDIO_MCP_COMMANDS
    server = await _create(
        admin,
        "/api/mcps",
        {"name": uniq("mcp"), "connection_config": {"command": "/nonexistent/mcp-server"}},
    )
    resp = await admin.post(f"/api/mcps/{server['id']}/test")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ok"] is False
    assert body["tools"] == []
    assert "failed to connect" in body["error"]
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "error"
    assert record["last_error"] == body["error"]


async def test_mcp_test_of_a_hanging_server_times_out(admin: httpx.AsyncClient) -> None:
    server = await _create(
        admin,
        "/api/mcps",
        {"name": uniq("mcp"), "connection_config": _stdio("hanging_mcp.py", connect_timeout=1)},
    )
    start = time.monotonic()
    resp = await admin.post(f"/api/mcps/{server['id']}/test")
    assert time.monotonic() - start < 10
    body = resp.json()
    assert body["ok"] is False
    assert "within 1 s" in body["error"]


async def test_mcp_test_with_a_missing_token_names_it(alice: httpx.AsyncClient) -> None:
    server = await _create(
        alice,
        "/api/mcps",
        {
            "name": uniq("mcp"),
            "connection_config": _stdio("demo_mcp.py", env={"K": "{{token:no_such_token}}"}),
        },
    )
    body = (await alice.post(f"/api/mcps/{server['id']}/test")).json()
    assert body["ok"] is False
    assert "no_such_token" in body["error"]


# --- custom tools --------------------------------------------------------------------------
async def test_validate_reports_syntax_errors_and_missing_entry_point(
    alice: httpx.AsyncClient,
) -> None:
    good = await alice.post(
        "/api/custom-tools/validate", json={"source_code": "def run(a):\n    return a\n"}
    )
    assert good.json() == {
        "valid": True,
        "inferred_schema": {"type": "object", "properties": {"a": {}}, "required": ["a"]},
        "error": None,
        "ok": True,
        "errors": [],
        "entry_point": "run",
    }
    bad = (
        await alice.post("/api/custom-tools/validate", json={"source_code": "def run(:\n  pass"})
    ).json()
    assert bad["ok"] is False
    assert "syntax error at line 1" in bad["errors"][0]
    none = (await alice.post("/api/custom-tools/validate", json={"source_code": "x = 1"})).json()
    assert none["ok"] is False
    assert "run(**arguments)" in none["errors"][0]


async def test_run_returns_the_tools_result(alice: httpx.AsyncClient) -> None:
    tool = await _create(
        alice,
        "/api/custom-tools",
        {
            "name": uniq("add"),
            "source_code": "def run(a, b):\n    print('adding')\n    return {'sum': a + b}\n",
            "parameters_schema": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    )
    body = (
        await alice.post(
            f"/api/custom-tools/{tool['id']}/run", json={"arguments": {"a": 2, "b": 3}}
        )
    ).json()
    assert body["ok"] is True and body["success"] is True
    assert body["value"] == {"sum": 5} and body["result"] == '{"sum": 5}'
    assert body["tool_name"] == tool["name"]
    assert body["error"] is None
    assert body["duration_ms"] > 0
    wrong = (
        await alice.post(f"/api/custom-tools/{tool['id']}/run", json={"arguments": {"a": "x"}})
    ).json()
    assert wrong["ok"] is False
    assert "parameters_schema" in wrong["error"]


async def test_run_times_out(alice: httpx.AsyncClient) -> None:
    tool = await _create(
        alice,
        "/api/custom-tools",
        {
            "name": uniq("sleepy"),
            "source_code": "import time\ndef run():\n    time.sleep(30)\n",
            "timeout_seconds": 1,
        },
    )
    start = time.monotonic()
    body = (await alice.post(f"/api/custom-tools/{tool['id']}/run", json={})).json()
    assert time.monotonic() - start < 10
    assert body["ok"] is False
    assert "timed out after 1 s" in body["error"]


async def test_run_sees_only_its_declared_env(
    alice: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "engine-secret-not-for-tools")
    monkeypatch.setenv("POSTGRES_URI", "postgresql://engine-secret@db/x")
    token = await _token(alice)
    tool = await _create(
        alice,
        "/api/custom-tools",
        {
            "name": uniq("env"),
            "source_code": "import os\ndef run():\n    return dict(os.environ)\n",
            "env_config": {"SERVICE_KEY": "{{token:" + token + "}}"},
        },
    )
    body = (await alice.post(f"/api/custom-tools/{tool['id']}/run", json={})).json()
    assert body["ok"] is True, body
    env = body["value"]
    assert env["SERVICE_KEY"] == SECRET
    assert "TOKEN_ENCRYPTION_KEY" not in env
    assert "POSTGRES_URI" not in env
    assert "engine-secret" not in str(env)


# --- guardrails ----------------------------------------------------------------------------
async def _guardrail(client: httpx.AsyncClient, **fields: Any) -> str:
    return str((await _create(client, "/api/guardrails", {"name": uniq("g"), **fields}))["id"])


async def test_guardrail_try_block_redact_flag_pass(alice: httpx.AsyncClient) -> None:
    block = await _guardrail(alice, action="block", patterns=[r"(?i)password"])
    body = (await alice.post(f"/api/guardrails/{block}/try", json={"text": "my Password"})).json()
    assert body["action"] == "block"
    assert body["triggered"] is True
    assert body["output"].startswith("Blocked by guardrail")
    assert "password" in body["reasons"][0]

    redact = await _guardrail(alice, action="redact", prompt_config={"pii": ["email"]})
    body = (
        await alice.post(f"/api/guardrails/{redact}/try", json={"text": "mail a@b.example now"})
    ).json()
    assert body == {
        "action": "redact",
        "triggered": True,
        "output": "mail [REDACTED:email] now",
        "reasons": ["contains email (1)"],
    }

    flag = await _guardrail(alice, action="flag", guardrail_type="output", patterns=["secret"])
    body = (await alice.post(f"/api/guardrails/{flag}/try", json={"text": "a secret"})).json()
    assert body["action"] == "flag"
    assert body["output"] == "a secret"
    clean = (await alice.post(f"/api/guardrails/{flag}/try", json={"text": "fine"})).json()
    assert clean == {"action": "pass", "triggered": False, "output": "fine", "reasons": []}


async def test_guardrail_try_unsaved(alice: httpx.AsyncClient) -> None:
    body = (
        await alice.post(
            "/api/guardrails/try",
            json={
                "guardrail": {"action": "block", "prompt_config": {"max_length": 3}},
                "text": "long",
            },
        )
    ).json()
    assert body["action"] == "block"
    assert "longer than 3" in body["reasons"][0]
    bad = await alice.post(
        "/api/guardrails/try", json={"guardrail": {"patterns": ["(unclosed"]}, "text": "x"}
    )
    assert bad.status_code == 422
    assert "pattern 1" in bad.json()["error"]["message"]
    req = await alice.post(
        "/api/guardrails/try",
        json={"guardrail": {"guardrail_type": "tool", "patterns": ["rm -rf"]}, "text": "not json"},
    )
    assert req.status_code == 422
    assert "JSON object" in req.json()["error"]["message"]


# --- ownership -----------------------------------------------------------------------------
async def test_another_user_gets_404(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    mcp = await _create(
        alice, "/api/mcps", {"name": uniq("mcp"), "connection_config": _stdio("demo_mcp.py")}
    )
    tool = await _create(
        alice, "/api/custom-tools", {"name": uniq("t"), "source_code": "def run():\n  return 1\n"}
    )
    guard = await _guardrail(alice, patterns=["x"])
    assert (await bob.post(f"/api/mcps/{mcp['id']}/test")).status_code == 404
    assert (await bob.post(f"/api/custom-tools/{tool['id']}/run", json={})).status_code == 404
    assert (await bob.post(f"/api/guardrails/{guard}/try", json={"text": "x"})).status_code == 404
    assert (await alice.post(f"/api/guardrails/{guard}/try", json={"text": "x"})).status_code == 200


async def test_guardrail_try_with_a_remote_schema_ref_is_a_422(alice: httpx.AsyncClient) -> None:
    schema = {"$ref": "http://127.0.0.1:9/schema.json"}
    resp = await alice.post(
        "/api/guardrails/try",
        json={
            "guardrail": {"guardrail_type": "request", "prompt_config": {"json_schema": schema}},
            "text": "{}",
        },
    )
    assert resp.status_code == 422
    assert "only references inside the schema itself" in resp.json()["error"]["message"]

"""`tbd-agents <resource> ...`, `runs` and `chat` against the real API on a socket: JSON and
table output, bodies from --file / --set, errors with their exit codes, chat -m and the REPL
(stdin), Ctrl-C stopping an answer without leaving the REPL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.cli.remote import ExitCode
from tbd_agents.client import TbdAgentsClient
from tests.client.conftest import Server, scripted_agent
from tests.engine.protocol_server import ProtocolServer, Turn

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def cli(server: Server, key: str) -> CliRunner:
    return CliRunner(env={"TBD_URL": server.url, "TBD_API_KEY": key, "TBD_OUTPUT": None})


def run(cli: CliRunner, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = cli.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_resources_in_json_and_table(cli: CliRunner, tmp_path: Path) -> None:
    body = tmp_path / "skill.json"
    body.write_text(json.dumps({"name": "cli-skill", "instructions": "be brief", "tags": ["a"]}))
    code, out, err = run(
        cli, "skills", "create", "--file", str(body), "--set", 'tags=["a","b"]', "-o", "json"
    )
    assert code == 0, err
    skill = json.loads(out)
    assert skill["name"] == "cli-skill" and skill["tags"] == ["a", "b"]

    code, out, _ = run(cli, "skills", "get", skill["id"], "--output", "json")
    assert code == 0 and json.loads(out)["instructions"] == "be brief"
    code, out, _ = run(cli, "skills", "list", "-o", "json")
    assert skill["id"] in [s["id"] for s in json.loads(out)]
    code, out, _ = run(cli, "skills", "list")  # table (the default)
    assert code == 0 and "cli-skill" in out and "a, b" in out and "record(s)" in out
    code, out, _ = run(cli, "skills", "get", skill["id"], "-o", "table")
    assert "instructions" in out and "be brief" in out

    code, out, _ = run(
        cli, "skills", "update", skill["id"], "--set", "description=short", "-o", "json"
    )
    assert code == 0 and json.loads(out)["description"] == "short"

    # nested --set, the agent group, and the tokens group shared with the key commands
    code, out, err = run(
        cli,
        "mcps",
        "create",
        "--set",
        "name=m1",
        "--set",
        "transport_type=stdio",
        "--set",
        "connection_config.command=echo",
        "-o",
        "json",
    )
    assert code == 0, err
    assert json.loads(out)["connection_config"]["command"] == "echo"
    code, out, err = run(
        cli,
        "tokens",
        "create",
        "--set",
        "name=cli-token",
        "--set",
        "value=a-long-secret-value",
        "-o",
        "json",
    )
    assert code == 0, err
    assert json.loads(out)["name"] == "cli-token" and "a-long-secret" not in out
    code, out, _ = run(cli, "tokens", "list")
    assert "cli-token" in out
    code, out, err = run(
        cli, "agents", "create", "--file", "-", "-o", "json", input='{"name": "from-stdin"}'
    )
    assert code == 0, err
    assert json.loads(out)["name"] == "from-stdin"

    code, _, err = run(cli, "skills", "delete", skill["id"])
    assert code == 0 and "Deleted" in err
    code, _, err = run(cli, "skills", "get", skill["id"])
    assert code == ExitCode.NOT_FOUND and "not found (404)" in err


def test_errors_name_the_fix(cli: CliRunner, server: Server, tmp_path: Path) -> None:
    code, _, err = run(cli, "agents", "list", "--key", "not-a-key")
    assert code == ExitCode.AUTH and "set TBD_API_KEY or --key" in err
    assert "Traceback" not in err
    code, _, err = run(cli, "agents", "list", "--url", "http://127.0.0.1:9")
    assert code == ExitCode.UNREACHABLE and "cannot reach http://127.0.0.1:9" in err
    code, _, err = run(cli, "agents", "create", "--set", "name=x", "--set", "bogus=1")
    assert code == ExitCode.REJECTED and "bogus" in err
    code, _, err = run(cli, "agents", "create")
    assert code == ExitCode.USAGE and "--file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(cli, "agents", "create", "--file", str(bad))
    assert code == ExitCode.USAGE and "not valid JSON" in err
    code, _, err = run(cli, "agents", "create", "--set", "novalue")
    assert code == ExitCode.USAGE and "key=value" in err
    code, _, err = run(cli, "agents", "list", "--url", "127.0.0.1:8000")
    assert code == ExitCode.USAGE and "--url" in err and "http://" in err


def test_workflow_run_runs_and_chat(
    cli: CliRunner, client: TbdAgentsClient, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    agent_id = scripted_agent(client, protocol_server)
    workflow = client.workflows.create(
        {"agent_id": agent_id, "title": "cli-run", "output_format": "markdown"}
    )
    protocol_server.script(Turn(text="The run's answer."))
    code, out, err = run(cli, "workflows", "run", workflow.id, "--prompt", "go")
    assert code == 0, err
    assert out.strip() == "The run's answer." and "[completed]" in err
    code, out, _ = run(cli, "runs", "list", "--workflow", workflow.id, "-o", "json")
    runs = json.loads(out)
    assert [r["status"] for r in runs] == ["completed"]
    code, out, _ = run(cli, "runs", "get", runs[0]["id"], "-o", "json")
    assert json.loads(out)["response"] == "The run's answer."
    code, out, _ = run(cli, "runs", "logs", runs[0]["id"])
    assert code == 0 and "completed" in out
    code, _, err = run(cli, "runs", "cancel", runs[0]["id"])
    assert code == ExitCode.REJECTED  # it has ended: nothing to stop

    # logs --follow: a running run's live events until it ends
    protocol_server.script(Turn(text="Slowly but surely.", chunk_chars=3, delay=0.1))
    started = client.workflows.send_prompt(workflow.id, prompt="slow")
    assert started.task_id
    code, out, err = run(cli, "runs", "logs", started.task_id, "--follow")
    assert code == 0, err
    assert "Slowly but surely." in out and out.rstrip().endswith("status: completed")

    # chat -m: one message, the answer printed; by name as well as by id
    agent_name = client.agents.get(agent_id).name
    protocol_server.script(Turn(text="One answer."))
    code, out, err = run(cli, "chat", agent_name, "-m", "hello")
    assert code == 0, err
    assert out.strip() == "One answer."
    protocol_server.script(Turn(text="As JSON."))
    code, out, _ = run(cli, "chat", agent_id, "-m", "hello", "-o", "json")
    answer = json.loads(out)
    assert answer["answer"] == "As JSON." and answer["ok"] is True and answer["session_id"]

    # the REPL on standard input: two turns of one session, /sessions, /new, /exit
    protocol_server.script(Turn(text="First."), Turn(text="Second."), Turn(text="Fresh."))
    before = len(protocol_server.requests)
    stdin = "Hi\nAnd again\n/sessions\n/new\nNew topic\n/exit\nnever sent\n"
    code, out, err = run(cli, "chat", agent_id, input=stdin)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["First.", "Second."]
    assert any(line.startswith("* ") and "  4 msgs" in line for line in lines)  # the current one
    assert lines[-2:] == ["[new session]", "Fresh."]
    sent = protocol_server.requests[-1].all_text()
    assert "New topic" in sent and "Hi" not in sent  # /new started over
    assert "And again" in protocol_server.requests[-2].all_text()
    assert len(protocol_server.requests) == before + 3  # "never sent" came after /exit


def test_chat_streams_and_ctrl_c_stops_only_the_answer(
    server: Server, key: str, client: TbdAgentsClient, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    agent_id = scripted_agent(client, protocol_server)
    protocol_server.script(
        Turn(text="z" * 4000, chunk_chars=4, delay=0.02), Turn(text="after the stop")
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "TBD_URL": server.url, "TBD_API_KEY": key}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tbd_agents.cli import app; app()", "chat", agent_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(b"talk a lot\n")
    proc.stdin.flush()
    first = proc.stdout.read(8)  # the answer arrives in pieces, before it is complete
    assert first == b"zzzzzzzz"
    began = time.monotonic()
    more = proc.stdout.read(40)
    assert more == b"z" * 40 and time.monotonic() - began > 0.1  # spread over time
    proc.send_signal(signal.SIGINT)
    proc.stdin.write(b"next question\n/exit\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"[stopped]" in err
    assert out.decode().splitlines()[-1] == "after the stop"
    assert "z" * 4000 not in (first + more + out).decode()
    for _ in range(100):
        if protocol_server.open_streams == 0:
            break
        time.sleep(0.05)
    assert protocol_server.cancelled_streams >= 1  # the model call was stopped too

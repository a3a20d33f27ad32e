"""Pure parts of the workflow options: caveman compression, TSV rendering, todo progress,
RunOptions from a workflow, the catalog's reasoning flag."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.domain.models import Workflow
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.compress import compress
from tbd_agents.engine.options import AUTO_MEMORY_POLICY, CAVEMAN_POLICY, RunOptions
from tbd_agents.engine.progress import (
    ProgressRecorder,
    parse_todo_list,
    update_todos_progress,
    watched_progress,
)
from tbd_agents.engine.tsv import render_tsv
from tbd_agents.errors import ConfigurationError

VERBOSE = (
    "It is important to note that the deploy script is really very slow. In order to "
    "deploy, run `make deploy   --fast` with the config at /etc/app/the.conf from "
    "https://example.com/the/a_b?x=1 as well as the_flag_name set to 42 [2]."
)


def test_caveman_drops_filler_and_keeps_code_urls_paths_numbers_and_citations() -> None:
    out = compress(VERBOSE)
    assert len(out) < len(VERBOSE)
    for kept in ("`make deploy   --fast`", "/etc/app/the.conf", "https://example.com/the/a_b?x=1",
                 "the_flag_name", "42", "[2]"):  # fmt: skip
        assert kept in out, kept
    lowered = f" {out.lower()} "
    assert "important to note" not in lowered and "in order to" not in lowered
    assert " the " not in lowered and " really " not in lowered and " very " not in lowered
    assert "deploy script slow" in out and "and the_flag_name" in out


def test_caveman_keeps_fenced_code_headings_tags_and_negations() -> None:
    text = (
        '## The heading is kept\n<memory key="a">The value is not the one.</memory>\n'
        "```python\nthe = a if is else an\n```\nIt is never the case."
    )
    out = compress(text)
    assert "## The heading is kept" in out
    assert '<memory key="a">' in out and "</memory>" in out
    assert "```python\nthe = a if is else an\n```" in out
    assert "not" in out and "never" in out


def test_caveman_is_deterministic_and_never_longer() -> None:
    assert compress(VERBOSE) == compress(VERBOSE)
    for text in ("", "x", "Done.", "`a` `b`", "https://a.b/c"):
        assert compress(text) == text


ROWS = [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "note": None} for i in range(1, 6)]


@pytest.mark.parametrize("key", ["results", "rows", "items", "matches", "entries"])
def test_tsv_renders_a_table_under_each_known_key_with_scalar_siblings(key: str) -> None:
    text = json.dumps({"total": 5, "query": "x", "nested": {"a": 1}, key: ROWS}, indent=2)
    out = render_tsv(text)
    lines = out.split("\n")
    assert lines[:3] == ["total: 5", "query: x", "id\tname\ttags\tnote"]
    assert lines[3] == "item 1".join(["1\t", '\t["a","b"]\t'])
    assert len(lines) == 3 + len(ROWS) and len(out) < len(text)


def test_tsv_escapes_tabs_newlines_and_backslashes_so_a_row_stays_one_line() -> None:
    rows = [{"a": "x\ty", "b": "line1\nline2\r", "c": "back\\slash"}] * 3
    out = render_tsv(json.dumps(rows, indent=1))
    assert out.split("\n")[1] == "x\\ty\tline1\\nline2\\r\tback\\\\slash"
    assert len(out.split("\n")) == 4


def test_tsv_columns_are_the_union_of_keys_in_first_seen_order() -> None:
    out = render_tsv(json.dumps([{"a": 1, "b": 2}, {"c": 3, "a": 4}], indent=4))
    assert out == "a\tb\tc\n1\t2\t\n4\t\t3"


@pytest.mark.parametrize(
    "text",
    [
        "plain text",
        json.dumps({"answer": 42}),
        json.dumps([1, 2, 3]),
        json.dumps([]),
        json.dumps({"results": []}),
        json.dumps([{"a": 1}]),  # the TSV ("a\n1") is shorter, see below
        "[not json",
    ],
)
def test_tsv_leaves_non_tabular_or_unparseable_results_alone(text: str) -> None:
    out = render_tsv(text)
    if text == json.dumps([{"a": 1}]):
        assert out == "a\n1"
    else:
        assert out == text


def test_tsv_is_used_only_when_shorter() -> None:
    sparse = json.dumps([{f"k{i}": i} for i in range(12)], separators=(",", ":"))
    assert render_tsv(sparse) == sparse  # twelve columns, eleven of them empty in every row


def test_todo_list_progress_has_the_existing_shape() -> None:
    got = parse_todo_list(
        {"todoList": [
            {"id": 1, "title": "read", "status": "completed"},
            {"id": "2", "title": "write", "status": "in-progress"},
            {"id": 3, "title": "ship", "status": "bogus"},
            "junk",
        ]}
    )  # fmt: skip
    assert got == {
        "todos": [
            {"id": 1, "title": "read", "status": "completed"},
            {"id": 2, "title": "write", "status": "in-progress"},
            {"id": 3, "title": "ship", "status": "not-started"},
        ],
        "current_step": 2,
        "percent_complete": pytest.approx(1 / 3, abs=1e-3),
    }
    assert parse_todo_list({"todos": []}) is None
    ours = update_todos_progress(
        [{"title": "a", "status": "done"}, {"title": "b", "status": "pending"}]
    )
    assert ours["todos"][0] == {"id": 1, "title": "a", "status": "completed"}
    assert ours["current_step"] is None and ours["percent_complete"] == 0.5


def test_only_non_builtin_manage_todo_list_calls_are_watched() -> None:
    args: dict[str, Any] = {"todoList": [{"id": 1, "title": "x", "status": "in-progress"}]}
    assert watched_progress("manage_todo_list", "mcp:srv", args) is not None
    assert watched_progress("srv__manage_todo_list", "mcp:srv", args) is not None
    assert watched_progress("manage_todo_list", "builtin", args) is None
    assert watched_progress("other", "mcp:srv", args) is None


async def test_progress_recorder_coalesces_updates_made_while_writing() -> None:
    written: list[int] = []
    gate = asyncio.Event()

    async def write(progress: dict[str, Any]) -> None:
        await gate.wait()
        written.append(progress["current_step"])

    recorder = ProgressRecorder(write)

    def event(step: int) -> dict[str, Any]:
        return {"todos": [{"id": step}], "current_step": step, "percent_complete": 0.0}

    first = asyncio.create_task(recorder.record(event(1)))
    await asyncio.sleep(0)
    for step in (2, 3, 4):  # arrive while 1 is being written
        await recorder.record(event(step))
    await recorder.record({"turn": 3})  # a turn event carries no todos: ignored
    gate.set()
    await first
    await recorder.flush()
    assert written == [1, 4]


def test_run_options_come_from_the_workflow_and_the_run() -> None:
    wf = Workflow(
        agent_id="a", caveman=True, tsv_tool_results=True, auto_memory=True,
        infinite_session=False, reasoning_effort="Medium", github_user="alice",
        credential_overrides={"API_KEY": "mine"},
    )  # fmt: skip
    options = RunOptions.of_workflow(wf)
    assert options.reasoning_effort == "medium" and options.credential_owner == "alice"
    assert options.policies() == [CAVEMAN_POLICY, AUTO_MEMORY_POLICY]
    assert RunOptions.of_workflow(wf, reasoning_effort="high").reasoning_effort == "high"
    assert (
        RunOptions.of_workflow(wf.model_copy(update={"reasoning_effort": "max"})).reasoning_effort
        is None
    )
    assert options.builtin_names([], memory_available=True) == ["store_memory"]
    assert options.builtin_names([], memory_available=False) == []
    bypass = RunOptions(auto_memory=True, bypass_memory=True, todo_tool=True)
    assert bypass.policies() == []
    assert bypass.builtin_names(["todo"], memory_available=False) == ["todo"]
    assert bypass.builtin_names(["store_memory", "Search_Memory"], memory_available=False) == [
        "manage_todo_list"
    ]
    assert bypass.builtin_names([], memory_available=False) == ["manage_todo_list"]
    assert RunOptions().policies() == []


def test_the_catalog_marks_reasoning_models(tmp_path: Path) -> None:
    catalog = ModelCatalog.load()
    assert catalog.get("o3-mini").reasoning and catalog.get("gpt-5-mini").reasoning
    assert catalog.get("o1").reasoning and catalog.get("o4-mini").reasoning
    assert not catalog.get("gpt-4o").reasoning and not catalog.get("claude-sonnet-4-5").reasoning
    options = RunOptions(reasoning_effort="low")
    assert options.effort_for(catalog.get("o3")) == "low"
    assert options.effort_for(catalog.get("gpt-4o")) is None
    bad = tmp_path / "models.toml"
    bad.write_text('[models."x*"]\nreasoning = "yes"\n')
    with pytest.raises(ConfigurationError, match="reasoning must be true or false"):
        ModelCatalog.load(bad)

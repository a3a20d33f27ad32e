"""TSV rendering of tabular tool results (a workflow's `tsv_tool_results`).

A JSON tool result that is a list of objects — or an object whose `results`, `rows`, `items`,
`matches` or `entries` key holds one — repeats every key on every row. Rendered as TSV (one
header row, one line per object) it usually costs the model far fewer tokens. The object's
scalar siblings of that list become `key: value` lines before the table; nested values are
written as compact JSON. Tabs, newlines, carriage returns and backslashes inside values are
escaped (`\\t`, `\\n`, `\\r`, `\\\\`) so one row stays one line.

`render_tsv(text)` returns the TSV only when it is shorter than `text`; anything else (not JSON,
not tabular, an empty list, a longer rendering) comes back unchanged.
"""

from __future__ import annotations

import json
from typing import Any

#: Keys whose list of objects is rendered (the existing TBD Agents' names, in its order).
TABLE_KEYS = ("results", "rows", "items", "matches", "entries")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    )
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def table_of(value: Any) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The rows and the scalar siblings of a tabular JSON value, or None."""
    if _is_table(value):
        return value, {}
    if isinstance(value, dict):
        for key in TABLE_KEYS:
            if _is_table(value.get(key)):
                scalars = {
                    k: v for k, v in value.items() if k != key and not isinstance(v, dict | list)
                }
                return value[key], scalars
    return None


def to_tsv(rows: list[dict[str, Any]], scalars: dict[str, Any]) -> str:
    """`key: value` lines for `scalars`, then a header and one line per row."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    lines = [f"{k}: {_cell(v)}" for k, v in scalars.items()]
    lines.append("\t".join(_cell(c) for c in columns))
    lines.extend("\t".join(_cell(row.get(c)) for c in columns) for row in rows)
    return "\n".join(lines)


def render_tsv(text: str) -> str:
    """`text` rendered as TSV when it is tabular JSON and that is shorter; else `text`."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return text
    try:
        value = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        return text
    table = table_of(value)
    if table is None:
        return text
    rendered = to_tsv(*table)
    return rendered if len(rendered) < len(text) else text

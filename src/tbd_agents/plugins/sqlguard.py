"""A lexical read-only check for SQL the plugins send to a database on a model's behalf.

A model writes these queries, and a prompt can steer a model, so the check assumes hostile
input. It tokenizes the text the way MySQL (or BigQuery) does — strings, quoted identifiers,
comments, words, `;` — and accepts one statement that starts with SELECT / WITH (MySQL also SHOW,
DESCRIBE, EXPLAIN) and contains no word that writes, locks, exports or runs other code, outside
strings and quoted identifiers. What it refuses outright because the server would read it
differently from a naive reader:

* MySQL executable comments `/*! … */` and `/*M! … */` (the server runs their contents);
* `--` not followed by a space (MySQL reads `1--1` as arithmetic, not as a comment);
* text after the first `;` other than comments (stacked statements);
* strings are lexed twice, with and without backslash escapes, and both readings must pass, so
  a server in NO_BACKSLASH_ESCAPES mode cannot see `'a\\'; DROP …` as two statements.

This is the first line only: mysql_read also runs the statement in a READ ONLY transaction with
a statement timeout on a connection that cannot send several statements at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from tbd_agents.plugins.base import PluginError

Dialect = Literal["mysql", "bigquery"]

FIRST_WORDS: dict[str, frozenset[str]] = {
    "mysql": frozenset(
        {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "TABLE", "VALUES"}
    ),
    "bigquery": frozenset({"SELECT", "WITH"}),
}
#: Words that never appear in a read-only query (outside strings and quoted identifiers).
FORBIDDEN = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "DROP", "CREATE", "ALTER",
        "TRUNCATE", "RENAME", "GRANT", "REVOKE", "CALL", "DO", "HANDLER", "LOAD", "LOAD_FILE",
        "INTO", "OUTFILE", "DUMPFILE", "LOCK", "UNLOCK", "PROCEDURE", "EXECUTE", "PREPARE",
        "DEALLOCATE", "KILL", "SHUTDOWN", "FLUSH", "RESET", "PURGE", "INSTALL", "UNINSTALL",
        "OPTIMIZE", "REPAIR", "BEGIN", "COMMIT", "ROLLBACK", "START", "SAVEPOINT", "RELEASE",
        "XA", "GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "EXPORT", "DECLARE", "ASSERT",
        "IMPORT", "CLONE", "SHARE", "NOWAIT", "SET",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    kind: Literal["word", "string", "ident", "comment", "semicolon", "other"]
    text: str


def _fail(why: str) -> PluginError:
    return PluginError(f"only read-only queries may run: {why}")


def tokenize(sql: str, dialect: Dialect = "mysql", backslash_escapes: bool = True) -> list[Token]:
    """The tokens of `sql` (whitespace dropped); PluginError on text the lexer refuses."""
    out: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif c == "#" or (sql.startswith("--", i) and dialect == "bigquery"):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(Token("comment", sql[i:end]))
            i = end
        elif sql.startswith("--", i):
            if i + 2 < n and not (sql[i + 2].isspace() or ord(sql[i + 2]) < 32):
                raise _fail("'--' must be followed by a space to start a comment (write '- -')")
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(Token("comment", sql[i:end]))
            i = end
        elif sql.startswith("/*", i):
            if sql.startswith(("/*!", "/*M!", "/*m!"), i):
                raise _fail("executable comments (/*! … */) are refused")
            end = sql.find("*/", i + 2)
            if end < 0:
                raise _fail("a /* comment is not closed")
            out.append(Token("comment", sql[i : end + 2]))
            i = end + 2
        elif c in "'\"":
            i = _string(sql, i, dialect, backslash_escapes, out)
        elif c == "`":
            j = i + 1
            while True:
                k = sql.find("`", j)
                if k < 0:
                    raise _fail("a `quoted identifier` is not closed")
                if sql.startswith("``", k):
                    j = k + 2
                    continue
                break
            out.append(Token("ident", sql[i : k + 1]))
            i = k + 1
        elif c == ";":
            out.append(Token("semicolon", c))
            i += 1
        elif c.isalnum() or c in "_$":
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            out.append(Token("word", sql[i:j]))
            i = j
        else:
            out.append(Token("other", c))
            i += 1
    return out


def _string(sql: str, i: int, dialect: Dialect, escapes: bool, out: list[Token]) -> int:
    quote = sql[i]
    triple = quote * 3
    if dialect == "bigquery" and sql.startswith(triple, i):
        end = sql.find(triple, i + 3)
        while end > 0 and escapes and _escaped(sql, end, i + 3):
            end = sql.find(triple, end + 1)
        if end < 0:
            raise _fail("a string is not closed")
        out.append(Token("string", sql[i : end + 3]))
        return end + 3
    j = i + 1
    while j < len(sql):
        ch = sql[j]
        if escapes and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if sql.startswith(quote * 2, j):  # a doubled quote stays inside the string
                j += 2
                continue
            out.append(Token("string", sql[i : j + 1]))
            return j + 1
        j += 1
    raise _fail("a string is not closed")


def _escaped(sql: str, at: int, start: int) -> bool:
    slashes, k = 0, at - 1
    while k >= start and sql[k] == "\\":
        slashes, k = slashes + 1, k - 1
    return slashes % 2 == 1


def check_read_only(sql: str, dialect: Dialect = "mysql") -> str:
    """`sql` without a trailing `;` when it is one read-only statement; else PluginError."""
    if "\x00" in sql:
        raise _fail("the query contains a NUL character")
    for escapes in (True, False):
        _check(tokenize(sql, dialect, escapes), dialect)
    return sql.strip().rstrip(";").rstrip()


def _check(tokens: list[Token], dialect: Dialect) -> None:
    code = [t for t in tokens if t.kind != "comment"]
    if not code:
        raise _fail("the query is empty")
    if any(t.kind == "semicolon" for t in code):
        first = next(k for k, t in enumerate(code) if t.kind == "semicolon")
        if any(t.kind != "semicolon" for t in code[first:]):
            raise _fail("only one statement may run (found text after ';')")
    words = [t for t in code if t.kind == "word"]
    lead = next((t for t in code if not (t.kind == "other" and t.text == "(")), None)
    allowed = FIRST_WORDS[dialect]
    if lead is None or lead.kind != "word" or lead.text.upper() not in allowed:
        start = lead.text if lead is not None else ""
        raise _fail(f"a query must start with {', '.join(sorted(allowed))}, not {start[:30]!r}")
    previous = ""
    for word in words:
        upper = word.text.upper()
        if upper in FORBIDDEN and not (upper == "SET" and previous in ("CHARACTER", "CHAR")):
            raise _fail(
                f"{upper} is not allowed in a read-only query (a column or table named so can "
                "be written in `backticks`)"
            )
        previous = upper
    if dialect == "mysql" and any(t.kind == "other" and t.text == "@" for t in code):
        assign = any(
            a.kind == "other" and a.text == ":" and b.kind == "other" and b.text == "="
            for a, b in itertools.pairwise(code)
        )
        if assign:
            raise _fail("assigning user variables (@x := …) is not allowed")


__all__ = ["FORBIDDEN", "check_read_only", "tokenize"]

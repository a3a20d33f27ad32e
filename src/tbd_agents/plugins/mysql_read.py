"""`mysql_read`: read-only SQL against a MySQL / MariaDB database named by a DSN.

Three layers keep it read-only, because the query text comes from a model:

1. `sqlguard.check_read_only` accepts one SELECT / SHOW / DESCRIBE / EXPLAIN / WITH statement;
2. the connection cannot stack statements (PyMySQL sends no CLIENT_MULTI_STATEMENTS), and the
   statement runs inside `START TRANSACTION READ ONLY`, which is rolled back afterwards;
3. a server-side statement timeout (MySQL `max_execution_time`, MariaDB `max_statement_time`)
   and a client read timeout bound it in time; at most `max_rows` rows are fetched.

The DSN should still name a database user with SELECT rights only: the layers above are defence
in depth, not a substitute for least privilege. PyMySQL is blocking, so each call runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pymysql
import pymysql.cursors

from tbd_agents.plugins.base import Plugin, PluginError
from tbd_agents.plugins.sqlguard import check_read_only

MAX_ROWS_LIMIT = 5000
DEFAULT_STATEMENT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Dsn:
    host: str
    port: int
    user: str
    password: str
    database: str | None

    @classmethod
    def parse(cls, dsn: str) -> Dsn:
        """`mysql://user:pass@host:port/db` (also `mysql+pymysql://`, `mariadb://`)."""
        parts = urlsplit(dsn.strip())
        if parts.scheme.split("+")[0] not in ("mysql", "mariadb") or not parts.hostname:
            raise PluginError(
                "MYSQL_CONNECTION must be a DSN like mysql://user:password@host:3306/database"
            )
        try:
            port = parts.port or 3306
        except ValueError:
            raise PluginError("MYSQL_CONNECTION has an invalid port") from None
        return cls(
            host=parts.hostname,
            port=port,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or None,
        )


class MysqlReadPlugin(Plugin):
    name = "mysql_read"
    description = (
        "Run a read-only SQL query (SELECT, SHOW, DESCRIBE, EXPLAIN, WITH … SELECT) on the MySQL "
        "database and get the rows back (at most max_rows)."
    )
    tags = ("mysql", "sql", "database")
    env_config = {"MYSQL_CONNECTION": "{{token:mysql-readonly-conn}}"}
    parameters_schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "One read-only SQL statement."},
            "max_rows": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS_LIMIT, "default": 50},
        },
        "required": ["query"],
    }

    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        query = check_read_only(str(self.arg(args, "query")))
        max_rows = max(1, min(int(args.get("max_rows") or 50), MAX_ROWS_LIMIT))
        dsn = Dsn.parse(self.need(env, "MYSQL_CONNECTION"))
        timeout = float(env.get("MYSQL_STATEMENT_TIMEOUT_SECONDS") or DEFAULT_STATEMENT_TIMEOUT)
        return await asyncio.to_thread(_run, dsn, query, max_rows, timeout)


def _run(dsn: Dsn, query: str, max_rows: int, timeout: float) -> dict[str, Any]:
    try:
        conn = pymysql.connect(
            host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password,
            database=dsn.database, connect_timeout=10, read_timeout=int(timeout) + 5,
            write_timeout=30, charset="utf8mb4", autocommit=False,
            cursorclass=pymysql.cursors.Cursor,
        )  # fmt: skip
    except pymysql.MySQLError as exc:
        raise PluginError(f"cannot connect to MySQL at {dsn.host}:{dsn.port}: {exc}") from None
    try:
        with conn.cursor() as cur:
            _statement_timeout(conn, cur, timeout)
            cur.execute("START TRANSACTION READ ONLY")
            try:
                cur.execute(query)
                columns = [d[0] for d in cur.description or ()]
                fetched = cur.fetchmany(max_rows + 1) if cur.description else []
            finally:
                conn.rollback()
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code in (1969, 3024, 1317):  # statement time exceeded (MariaDB, MySQL), interrupted
            raise PluginError(
                f"the query ran longer than {timeout:g} s and was stopped; narrow it (WHERE, LIMIT)"
            ) from None
        raise PluginError(f"MySQL error: {exc}") from None
    finally:
        conn.close()
    rows = [dict(zip(columns, (_json(v) for v in row), strict=False)) for row in fetched[:max_rows]]
    return {
        "columns": columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": len(fetched) > max_rows,
    }


def _statement_timeout(conn: Any, cur: Any, seconds: float) -> None:
    """The server-side limit: MariaDB counts seconds in max_statement_time, MySQL milliseconds
    in max_execution_time (SELECTs only, which is all that may run here)."""
    if "mariadb" in str(conn.get_server_info()).lower():
        cur.execute("SET SESSION max_statement_time = %s", (float(seconds),))
    else:
        cur.execute("SET SESSION max_execution_time = %s", (int(seconds * 1000),))


def _json(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    return value

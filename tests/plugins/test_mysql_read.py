"""mysql_read against the real MariaDB on 127.0.0.1:3306: reads work, max_rows caps, every
write or escape attempt is refused (by the guard, or by the READ ONLY transaction and the
statement timeout behind it) and the table is intact afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymysql
import pytest

from tbd_agents.plugins.base import PluginError
from tbd_agents.plugins.mysql_read import Dsn, MysqlReadPlugin, _run
from tbd_agents.plugins.sqlguard import check_read_only
from tests.plugins.conftest import run

DSN = "mysql://root:@127.0.0.1:3306/test"


def _connect() -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test")


@pytest.fixture
def table() -> Iterator[str]:
    name = f"plug_{uuid.uuid4().hex[:10]}"
    conn = _connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {name} (id INT PRIMARY KEY, label VARCHAR(40), price DECIMAL(6,2))"
            )
            cur.executemany(
                f"INSERT INTO {name} VALUES (%s, %s, %s)",
                [(i, f"item-{i}", f"{i}.50") for i in range(1, 121)],
            )
        conn.commit()
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
            cur.execute(f"DROP TABLE IF EXISTS {name}_copy")
        conn.commit()
        conn.close()


def rows_in(table: str) -> int:
    conn = _connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


ENV = {"MYSQL_CONNECTION": DSN}


async def test_reads_return_rows_as_objects_and_max_rows_caps(table: str) -> None:
    res = await run(
        MysqlReadPlugin(), {"query": f"SELECT id, label, price FROM {table} ORDER BY id"}, ENV
    )
    assert not res.is_error, res.content
    assert res.data["columns"] == ["id", "label", "price"]
    assert res.data["row_count"] == 50 and res.data["truncated"] is True  # the default cap
    assert res.data["rows"][0] == {"id": 1, "label": "item-1", "price": "1.50"}

    few = await run(
        MysqlReadPlugin(), {"query": f"select * from {table} where id <= 3;", "max_rows": 5}, ENV
    )
    assert few.data["row_count"] == 3 and few.data["truncated"] is False

    for query in (
        f"SHOW COLUMNS FROM {table}",
        f"DESCRIBE {table}",
        f"EXPLAIN SELECT * FROM {table} WHERE id = 1",
        f"WITH cheap AS (SELECT id FROM {table} WHERE price < 3) SELECT COUNT(*) AS n FROM cheap",
        f"SELECT 'a;b' AS s, `label` FROM {table} -- trailing comment\nLIMIT 1",
    ):
        ok = await run(MysqlReadPlugin(), {"query": query, "max_rows": 500}, ENV)
        assert not ok.is_error, (query, ok.content)
    cte = await run(
        MysqlReadPlugin(),
        {
            "query": f"WITH c AS (SELECT id FROM {table} WHERE price < 3) SELECT COUNT(*) AS n FROM c"
        },
        ENV,
    )
    assert cte.data["rows"] == [{"n": 2}]


ATTACKS = [
    "SELECT 1; DROP TABLE {t}",
    "SELECT 1;DROP TABLE {t};",
    "/*!50000 DROP TABLE {t}*/",
    "SELECT 1 /*!50000 ; DROP TABLE {t}*/",
    "SELECT /*M! 1; DELETE FROM {t} */ 1",
    "SELECT * FROM {t} INTO OUTFILE '/tmp/x.csv'",
    "SELECT * FROM {t} INTO DUMPFILE '/tmp/x.bin'",
    "SELECT id INTO @v FROM {t} LIMIT 1",
    "WITH x AS (SELECT id FROM {t}) DELETE FROM {t} WHERE id IN (SELECT id FROM x)",
    "DELETE FROM {t}",
    "UPDATE {t} SET label = 'x'",
    "INSERT INTO {t} VALUES (999, 'x', 1)",
    "REPLACE INTO {t} VALUES (1, 'x', 1)",
    "TRUNCATE TABLE {t}",
    "DROP TABLE {t}",
    "ALTER TABLE {t} ADD COLUMN z INT",
    "CREATE TABLE {t}_copy AS SELECT * FROM {t}",
    "RENAME TABLE {t} TO {t}_copy",
    "SET autocommit = 1",
    "SET @@session.sql_mode = ''",
    "CALL mysql.some_proc()",
    "DO SLEEP(1)",
    "LOAD DATA INFILE '/etc/passwd' INTO TABLE {t}",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT * FROM {t} FOR UPDATE",
    "SELECT * FROM {t} LOCK IN SHARE MODE",
    "SELECT * FROM {t} FOR SHARE",
    "LOCK TABLES {t} WRITE",
    "HANDLER {t} OPEN",
    "SELECT 'it''s'; DROP TABLE {t}",
    "SELECT 'a\\'; DROP TABLE {t}; -- '",  # two readings of the backslash: both must pass
    'SELECT "x;" ; DELETE FROM {t}',
    "SELECT 1--1; DROP TABLE {t}",
    "SELECT 1 # comment\n; DROP TABLE {t}",
    "SELECT 1 /* ; */ ; DROP TABLE {t}",
    "SELECT * FROM {t} /* unterminated",
    "SELECT @x := 1",
    "GRANT ALL ON *.* TO 'x'@'%'",
    "START TRANSACTION",
    "COMMIT",
    "PREPARE s FROM 'DROP TABLE {t}'",
    "EXECUTE s",
    "EXPLAIN DELETE FROM {t}",
    "SHOW TABLES; DROP TABLE {t}",
    "",
    "   ;  ",
    "SELECT 1\x00; DROP TABLE {t}",
]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_every_write_attempt_is_refused_and_the_table_stays(table: str, attack: str) -> None:
    query = attack.format(t=table)
    res = await run(MysqlReadPlugin(), {"query": query}, ENV)
    assert res.is_error, query
    assert "read-only" in res.content or "is required" in res.content, res.content
    assert rows_in(table) == 120


async def test_a_long_query_is_stopped_by_the_statement_timeout(table: str) -> None:
    res = await run(
        MysqlReadPlugin(),
        {"query": "select sleep(100)"},
        {**ENV, "MYSQL_STATEMENT_TIMEOUT_SECONDS": "1"},
    )
    assert res.is_error and "longer than 1 s and was stopped" in res.content


def test_the_transaction_refuses_a_write_the_guard_would_miss(table: str) -> None:
    """Defence in depth: were the guard fooled, READ ONLY still stops the write (called below
    the guard on purpose) and the statement is rolled back."""
    with pytest.raises(PluginError, match="READ ONLY transaction"):
        _run(Dsn.parse(DSN), f"DELETE FROM {table}", 10, 5.0)
    assert rows_in(table) == 120


async def test_connection_problems_are_clear() -> None:
    res = await run(MysqlReadPlugin(), {"query": "SELECT 1"}, {"MYSQL_CONNECTION": "postgres://x"})
    assert res.is_error and "mysql://user:password@host:3306/database" in res.content
    down = await run(
        MysqlReadPlugin(),
        {"query": "SELECT 1"},
        {"MYSQL_CONNECTION": "mysql://root@127.0.0.1:1/test"},
    )
    assert down.is_error and "cannot connect to MySQL at 127.0.0.1:1" in down.content
    unset = await run(MysqlReadPlugin(), {"query": "SELECT 1"}, {})
    assert unset.is_error and "{{token:mysql-readonly-conn}}" in unset.content


@pytest.mark.parametrize(
    "query",
    [
        "SELECT `update`, `delete` FROM t",  # quoted identifiers are names, not keywords
        "SELECT 'DROP TABLE x; DELETE' AS s",  # so are strings
        "SELECT CAST(x AS CHAR CHARACTER SET utf8mb4) FROM t",
        "(SELECT 1) UNION (SELECT 2)",
        "SHOW CHARACTER SET",
        "SELECT 1 -- comment; DROP TABLE x",
        "SELECT 1 /* DROP TABLE x; */",
        "SELECT 1;",
    ],
)
def test_the_guard_accepts_harmless_shapes(query: str) -> None:
    check_read_only(query)

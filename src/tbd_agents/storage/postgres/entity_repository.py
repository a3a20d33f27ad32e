"""`PostgresRepository`: the storage protocol's `Repository` for one entity, on one connection.

Every call issues a fixed number of statements (one for reads and most writes, built once in
`statements`), rows come back as domain models, and driver errors leave as domain errors
(`storage.postgres.errors.translate`); unknown errors propagate unchanged. Deleting a parent
deletes its children: through the cascading foreign keys, and, for the links that have none (a
workflow's task executions and schedules, see `schema.FOREIGN_KEYS`), in the same DELETE
statement.

A model with a `numbering` (a chat message's `seq`) is numbered on `create` / `insert_many`: one
`UPDATE parent SET counter = counter + n … RETURNING counter` per parent gives the new rows their
numbers in the order they are written (and raises the parent's count of them, if it keeps one),
and holds the parent's row lock until the transaction ends, so concurrent writers of one parent take their turns (parents are locked in id order).

A failed statement aborts a PostgreSQL transaction. So that a caught `DuplicateKey` does not
poison the unit of work, `create` inserts with `ON CONFLICT DO NOTHING` and reports the clash
itself, and `insert_many` runs inside a savepoint.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, NoReturn, TypeVar, cast

from pydantic import ValidationError
from sqlalchemy import Select, delete, exists, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, Result
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from tbd_agents.domain.models import Entity, Numbering
from tbd_agents.errors import (
    DuplicateKey,
    InvalidData,
    NotFound,
    StorageError,
    UnsupportedQuery,
    VersionConflict,
)
from tbd_agents.storage.common import (
    check_filters,
    check_numbered,
    check_query,
    check_update_fields,
    check_upsert_key,
    cursor_values,
    fields_of,
    iterate_pages,
    list_json_via_models,
    number_records,
    validate_changes,
    well_formed_id,
)
from tbd_agents.storage.postgres.direct import DirectLink, DirectStatement
from tbd_agents.storage.postgres.errors import DRIVER_ERRORS, translate
from tbd_agents.storage.postgres.json_rows import json_document, json_page_statement
from tbd_agents.storage.postgres.query import db_value, keyset_clause, order_by, where_clause
from tbd_agents.storage.postgres.rows import row_builder
from tbd_agents.storage.postgres.schema import code_cascades
from tbd_agents.storage.postgres.statements import (
    cascading_delete,
    direct_by_id,
    direct_insert,
    direct_update,
    direct_whole_list,
    insert_returning,
    result_columns,
    select_by_id,
    update_statement,
    version_by_id,
)
from tbd_agents.storage.postgres.tables import TABLES  # every table, extra modules included
from tbd_agents.storage.postgres.whole_lists import WHOLE_LISTS, whole_list_version
from tbd_agents.storage.protocol import (
    Filter,
    GroupLatest,
    JsonPage,
    Op,
    Page,
    Query,
    encode_cursor,
    in_,
)

E = TypeVar("E", bound=Entity)
#: Puts what is known about an outage (the embedded server's situation) into its error.
Explain = Callable[[StorageError], StorageError]


#: Order of `find_one` (the protocol's default sort).
DEFAULT_SORT_FIELDS = ("created_at", "id")


class WriteBudget:
    """The writes a unit of work may still make (`unit_of_work(single_write=True)`: one)."""

    def __init__(self, writes: int | None) -> None:
        self.left = writes

    @property
    def limited(self) -> bool:
        return self.left is not None

    def spend(self) -> None:
        if self.left is None:
            return
        if self.left <= 0:
            raise RuntimeError(
                "a second write in a unit_of_work(single_write=True): open it without "
                "single_write, the writes must share a transaction"
            )
        self.left -= 1


#: The budget of ordinary units of work (transactions): any number of writes.
UNLIMITED = WriteBudget(None)


class PostgresRepository(Generic[E]):
    """`storage.protocol.Repository` for one entity, on one connection (one transaction)."""

    def __init__(
        self,
        model: type[E],
        conn: AsyncConnection,
        *,
        url: URL | None = None,
        embedded: bool = False,
        direct: DirectLink | None = None,
        budget: WriteBudget = UNLIMITED,
        explain: Explain | None = None,
    ) -> None:
        self.model = model
        self._explain = explain
        self._budget = budget
        self.table = TABLES[model.collection]
        self._result = result_columns(self.table)
        self._conn = conn
        self._url = url
        self._embedded = embedded
        self._columns = tuple(fields_of(model))
        self._build = row_builder(model)
        self._names = tuple(c.name for c in self.table.c)
        self._direct = direct if direct is not None else DirectLink(conn)

    # --- plumbing --------------------------------------------------------------------------
    def _raise(self, exc: BaseException) -> NoReturn:
        err = translate(exc, url=self._url, entity=self.model.__name__, embedded=self._embedded)
        if err is None:
            raise exc
        if self._explain is not None and isinstance(err, StorageError):
            err = self._explain(err)
        raise err from exc

    async def _execute(self, stmt: Executable, params: dict[str, Any] | None = None) -> Result[Any]:
        try:
            return await self._conn.execute(stmt, params)
        except DRIVER_ERRORS as exc:
            self._raise(exc)

    async def _whole_list(
        self, whole: DirectStatement, equal: tuple[str, ...], values: dict[str, Any]
    ) -> bytes | None:
        """The whole list's JSON array, from `WHOLE_LISTS` when its rows have not changed."""
        version_stmt = whole_list_version(self.table, equal, self._conn.dialect)
        seen = await self._fetch_direct(version_stmt, values)
        key = (str(self._conn.engine.url), whole.sql, tuple(sorted(values.items())))
        version: tuple[Any, ...] | None = None
        if seen is not None and seen[0][2]:  # this transaction has not written
            version = (seen[0][0], seen[0][1])
            hit = WHOLE_LISTS.get(key, version)
            if hit is not None:
                return hit
        rows = await self._fetch_direct(whole, values)
        if rows is None:
            return None
        body = bytes(rows[0][0])
        if version is not None:
            WHOLE_LISTS.put(key, version, body)
        return body

    async def _fetch_direct(
        self, statement: DirectStatement, values: Mapping[str, Any]
    ) -> builtins.list[Any] | None:
        """The rows of a `direct` statement; None: run it through SQLAlchemy instead."""
        try:
            return await self._direct.fetch(statement, values)
        except DRIVER_ERRORS as exc:
            self._raise(exc)

    def _to_model(self, row: Any) -> E:
        if self._build is not None:
            # every statement here selects or returns the table's columns in table order
            built = self._build(dict(zip(self._names, row, strict=True)))
            if built is not None:
                return built  # type: ignore[return-value]  # the builder of self.model
        data = dict(row._mapping) if hasattr(row, "_mapping") else dict(row.items())
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:  # a row written by other means than this repository
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise InvalidData(
                f"{self.model.collection} record {data.get('id')!r} does not fit the model: "
                f"{field}: {err['msg']}; fix the row (or migrate it) in the database",
                details={"id": data.get("id"), "field": field},
            ) from None

    def _row_of(self, record: E) -> dict[str, Any]:
        if not isinstance(record, self.model):
            raise InvalidData(
                f"{self.model.collection} stores {self.model.__name__} records, "
                f"not {type(record).__name__}"
            )
        return {name: db_value(getattr(record, name)) for name in self._columns}

    def _select(self) -> Select[Any]:
        return select(*self._result).select_from(self.table)

    # --- reads -----------------------------------------------------------------------------
    async def get(self, record_id: str) -> E:
        """The record with `record_id`; NotFound if there is none (or the id is malformed)."""
        if not well_formed_id(record_id):
            raise NotFound(self.model.__name__, str(record_id))
        params = {"record_id": record_id}
        rows = await self._fetch_direct(direct_by_id(self.table, self._conn.dialect), params)
        if rows is not None:
            row = rows[0] if rows else None
        else:
            row = (await self._execute(select_by_id(self.table), params)).first()
        if row is None:
            raise NotFound(self.model.__name__, record_id)
        return self._to_model(row)

    async def find_one(self, *filters: Filter) -> E | None:
        """The first matching record in the default order (created_at, id), or None."""
        checked = check_filters(self.model, filters)
        stmt = (
            self._select()
            .where(*where_clause(self.table, self.model, checked))
            .order_by(*(self.table.c[f] for f in DEFAULT_SORT_FIELDS))
            .limit(1)
        )
        row = (await self._execute(stmt)).first()
        return None if row is None else self._to_model(row)

    async def list(self, query: Query = Query()) -> Page[E]:  # noqa: B008 - frozen dataclass
        """One page in the query's order (one statement; `limit + 1` rows tell if more follow)."""
        checked = check_query(self.model, query)
        conds = where_clause(self.table, self.model, checked.filters)
        if checked.after is not None:
            conds.append(keyset_clause(self.table, checked.sort, checked.after))
        stmt = self._select().where(*conds).order_by(*order_by(self.table, checked.sort))
        if checked.limit is not None:
            stmt = stmt.limit(checked.limit + 1)
        rows = (await self._execute(stmt)).all()
        more = checked.limit is not None and len(rows) > checked.limit
        items = [self._to_model(r) for r in (rows[: checked.limit] if more else rows)]
        if not more:
            return Page(items=items, next_cursor=None)
        return Page(items=items, next_cursor=encode_cursor(cursor_values(items[-1], checked.sort)))

    async def list_json(
        self,
        query: Query = Query(),  # noqa: B008 - frozen dataclass
        omit: frozenset[str] = frozenset(),
    ) -> JsonPage:
        """The page `list` returns, serialised by PostgreSQL (`json_rows`): one statement, the
        same rows and cursor, no model built. Falls back to models for a column type
        `json_rows` does not translate."""
        # Fields the model never serialises (`exclude=True`: a sealed credential) stay out of
        # the database's JSON too, as they stay out of `records_json`.
        fields = tuple(
            name
            for name in self._columns
            if name not in omit and not self.model.model_fields[name].exclude
        )
        document = json_document(self.table, fields)
        if document is None:
            return await list_json_via_models(self.list, self.model, query, omit)
        checked = check_query(self.model, query)
        if checked.limit is None and all(
            f.op is Op.EQ and isinstance(db_value(f.value), str | int | bool)
            for f in checked.filters
        ):  # the whole list, filtered by equalities (owner, parent...): a prepared statement
            whole = direct_whole_list(
                self.table,
                fields,
                checked.sort,
                tuple(f.field for f in checked.filters),
                self._conn.dialect,
            )
            values = {f"p{i}": db_value(f.value) for i, f in enumerate(checked.filters)}
            if whole is not None:
                cached = await self._whole_list(
                    whole, tuple(f.field for f in checked.filters), values
                )
                if cached is not None:
                    return JsonPage(cached, None)
        conds = where_clause(self.table, self.model, checked.filters)
        if checked.after is not None:
            conds.append(keyset_clause(self.table, checked.sort, checked.after))
        statement = json_page_statement(self.table, document, checked, conds)
        row: tuple[Any, ...] = tuple((await self._execute(statement)).one())
        items, found = row[0], row[1]
        body = ("[" + (items or "") + "]").encode()
        if checked.limit is None or found <= checked.limit:
            return JsonPage(body, None)
        return JsonPage(body, encode_cursor(list(row[2:])))

    def iterate(self, query: Query = Query(), batch_size: int = 500) -> AsyncIterator[E]:  # noqa: B008
        """Every matching record in the query's order, fetched in keyset pages of `batch_size`.

        `query.limit`, if set, caps the total number of records yielded.
        """
        return iterate_pages(self.list, query, batch_size)

    async def count(self, *filters: Filter) -> int:
        """How many records match `filters` (all records without filters)."""
        checked = check_filters(self.model, filters)
        stmt = (
            select(func.count())
            .select_from(self.table)
            .where(*where_clause(self.table, self.model, checked))
        )
        return int((await self._execute(stmt)).scalar_one())

    async def group_latest(
        self, field: str, values: Sequence[str], take: Sequence[str] = ()
    ) -> dict[str, GroupLatest]:
        """Per value of `field`: the count and the newest record's `created_at` + `take` fields,
        in one statement (window count and row number over the group)."""
        if not values:
            return {}
        check_filters(self.model, (in_(field, list(values)),))
        key = self.table.c[field]
        wanted = ["created_at", *take]
        newest_first = (self.table.c.created_at.desc(), self.table.c.id.desc())
        ranked = (
            select(
                key.label("group_key"),
                func.count().over(partition_by=key).label("n"),
                func.row_number().over(partition_by=key, order_by=newest_first).label("rank"),
                *(self.table.c[name].label(name) for name in wanted),
            )
            .where(key.in_(list(values)))
            .subquery()
        )
        stmt = select(ranked.c.group_key, ranked.c.n, *(ranked.c[name] for name in wanted)).where(
            ranked.c.rank == 1
        )
        found: dict[str, GroupLatest] = {}
        for row in (await self._execute(stmt)).all():
            cells = tuple(row)
            found[cells[0]] = GroupLatest(int(cells[1]), dict(zip(wanted, cells[2:], strict=True)))
        return found

    # --- writes ----------------------------------------------------------------------------
    async def _numbered(self, records: Sequence[E]) -> builtins.list[E]:
        """`records` numbered from their parents' counters (module docstring)."""
        return await number_records(self.model, records, self._raise_counter)

    async def _raise_counter(self, numbering: Numbering, parent_id: str, n: int) -> int | None:
        parent = TABLES[numbering.parent]
        counter = parent.c[numbering.counter]
        # The parent changed (its counters): a new version, `updated_at` in commit order.
        values: dict[Any, Any] = {
            counter: counter + n,
            parent.c.updated_at: func.clock_timestamp(),
            parent.c.version: parent.c.version + literal_column("1"),
        }
        if numbering.count is not None:
            count = parent.c[numbering.count]
            values[count] = count + n
        stmt = update(parent).where(parent.c.id == parent_id).values(values).returning(counter)
        last = (await self._execute(stmt)).scalar_one_or_none()
        return None if last is None else int(last)

    async def create(self, record: E) -> E:
        """Insert `record`; DuplicateKey naming the key if its id or a unique key is taken.

        The unit of work stays usable after a DuplicateKey.
        """
        if self.model.numbering is not None:
            [record] = await self._numbered([record])
        row = self._row_of(record)
        self._budget.spend()
        statement = direct_insert(self.table, self._conn.dialect, tuple(row))
        rows = await self._fetch_direct(statement, row)
        if rows is not None:
            created = rows[0] if rows else None
        else:
            created = (await self._execute(insert_returning(self.table), row)).first()
        if created is None:
            raise DuplicateKey(self.model.__name__, await self._clashing_key(row))
        return self._to_model(created)

    async def _clashing_key(self, row: Mapping[str, Any]) -> builtins.list[str]:
        """Which unique key of `row` already exists (one statement, only on the error path)."""
        keys = [("id",), *self.model.unique_keys]
        probes = [
            exists().where(*(self.table.c[f] == row[f] for f in key)).label(f"k{i}")
            for i, key in enumerate(keys)
        ]
        found = (await self._execute(select(*probes))).one()
        for key, hit in zip(keys, found, strict=True):
            if hit:
                return builtins.list(key)
        return []  # the clashing row went away in between; the insert still did not happen

    async def insert_many(self, records: Sequence[E]) -> int:
        """Insert every record, all or none: one pipelined executemany (asyncpg sends the whole
        batch in one round trip) inside a savepoint.

        DuplicateKey if any id or unique key is taken (also within `records`); the unit of work
        stays usable. Returns the number of rows inserted.
        """
        if self.model.numbering is not None:
            records = await self._numbered(records)
        rows = [self._row_of(r) for r in records]
        if not rows:
            return 0
        self._budget.spend()
        try:
            if self._budget.limited:  # no transaction, so no savepoint: one atomic statement
                await self._conn.execute(insert(self.table), rows)
            else:
                async with self._conn.begin_nested():
                    await self._conn.execute(insert(self.table), rows)
        except DRIVER_ERRORS as exc:
            self._raise(exc)
        return len(rows)

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> E:
        """Set only the named fields (validated against the model), `version + 1` and
        `updated_at`, in one UPDATE (see `update_statement`).

        `updated_at` is the database's `clock_timestamp()` unless `changes` names it. With
        `expected_version`, the UPDATE matches only that version; VersionConflict if the record
        is at another. NotFound for an unknown id, InvalidData for an unknown field,
        `id`/`created_at`/`version`, or a value the field refuses.
        """
        values = validate_changes(self.model, changes)
        if not well_formed_id(record_id):
            raise NotFound(self.model.__name__, str(record_id))
        self._budget.spend()
        changed = {k: db_value(v) for k, v in values.items()}
        conditional = expected_version is not None
        server_time = "updated_at" not in changed
        params: dict[str, Any] = {**changed, "_record_id": record_id}
        if conditional:
            params["_expected_version"] = expected_version
        statement = direct_update(
            self.table, self._conn.dialect, tuple(sorted(changed)), conditional, server_time
        )
        rows = await self._fetch_direct(statement, params)
        if rows is not None:
            row = rows[0] if rows else None
        else:
            stmt = update_statement(self.table, conditional=conditional, server_time=server_time)
            keys = {k: v for k, v in params.items() if k.startswith("_")}
            row = (await self._execute(stmt.values(changed), keys)).first()
        if row is None:
            await self._missing(record_id, expected_version)
        return self._to_model(row)

    async def _missing(self, record_id: str, expected_version: int | None) -> NoReturn:
        """Why a write by id matched no row: NotFound, or VersionConflict naming the version the
        record is at (one more statement, only on this path)."""
        if expected_version is not None:
            params = {"record_id": record_id}
            current = (await self._execute(version_by_id(self.table), params)).scalar()
            if current is not None:
                raise VersionConflict(self.model.__name__, record_id, current, [expected_version])
        raise NotFound(self.model.__name__, record_id)

    async def upsert(
        self, record: E, key: Sequence[str], update_fields: Sequence[str] | None = None
    ) -> E:
        """Insert `record`, or update the row with the same `key` values (one statement).

        `key` must be `("id",)` or one of the model's unique keys. On update, the existing row's
        `id` and `created_at` are kept and `update_fields` (default: every other field) are
        overwritten with the record's values.
        """
        conflict_key = check_upsert_key(self.model, key)
        fields = check_update_fields(self.model, conflict_key, update_fields)
        check_numbered(record)
        row = self._row_of(record)
        self._budget.spend()
        insert_row = pg_insert(self.table).values(row)
        stmt = insert_row.on_conflict_do_update(
            index_elements=[self.table.c[k] for k in conflict_key],
            set_={
                **{f: insert_row.excluded[f] for f in fields},
                "version": self.table.c.version + literal_column("1"),
            },
        ).returning(self.table)
        return self._to_model((await self._execute(stmt)).one())

    async def delete(self, record_id: str, *, expected_version: int | None = None) -> bool:
        """Delete one record (and its children); True if it existed (False for malformed ids).

        With `expected_version`, the DELETE matches only that version (its children go only
        with it); VersionConflict if the record is at another."""
        if not well_formed_id(record_id):
            return False
        self._budget.spend()
        conditions = [self.table.c.id == record_id]
        if expected_version is not None:
            conditions.append(self.table.c.version == expected_version)
        stmt = cascading_delete(self.table, conditions)
        if (await self._execute(stmt)).first() is not None:
            return True
        if expected_version is not None:
            try:
                await self._missing(record_id, expected_version)
            except NotFound:
                return False
        return False

    async def delete_where(self, *filters: Filter) -> int:
        """Delete every matching record (and their children); refuses an empty filter list.
        Returns how many."""
        if not filters:
            raise UnsupportedQuery(
                f"delete_where on {self.model.collection} needs at least one filter; "
                "deleting every record must be asked for explicitly (e.g. not_null('id') is refused "
                "too: use a real condition)"
            )
        checked = check_filters(self.model, filters)
        conditions = where_clause(self.table, self.model, checked)
        self._budget.spend()
        if not code_cascades(self.table.name):
            stmt = delete(self.table).where(*conditions)
            result = await self._execute(stmt)
            return int(cast(Any, result).rowcount)
        rows = (await self._execute(cascading_delete(self.table, conditions))).all()
        return len(rows)

"""Router factory: list / create / get / partial update / delete for one resource.

Every resource gets the same five routes with the same rules (201 on create, 204 on delete,
PATCH semantics, 404 for unknown or malformed ids, cursor pagination, the common filters plus the
resource's own), so the behaviour is written and tested once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel
from starlette.datastructures import URL

from tbd_agents.api.deps import ApiContext, Caller, CommonList, Ctx, Paging
from tbd_agents.api.preconditions import IfMatch, etag, expected_versions
from tbd_agents.api.present import PRESENTED, present_many, present_one
from tbd_agents.api.schemas import (
    HIDDEN,
    create_schema,
    json_response,
    output_schema,
    page_response,
    page_schema,
    update_schema,
)
from tbd_agents.domain.models import Entity
from tbd_agents.errors import PermissionDenied, UnsupportedQuery
from tbd_agents.security.outbound import HostPolicy
from tbd_agents.services.access import Principal
from tbd_agents.services.catalog import check_saved_addresses, records_for, writes_once
from tbd_agents.storage.protocol import (
    Filter,
    Sort,
    contains_all,
    contains_any,
    contains_text,
    eq,
)

RecordId = Annotated[str, Path(description="Record id.")]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    detail: str
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "Bad request (e.g. a cursor of another query)"),
        (401, "Missing, unknown or revoked credentials"),
        (403, "The key's scope does not allow this"),
        (404, "Unknown (or malformed) id"),
        (409, "Conflict: duplicate name, or dependants block a delete"),
        (412, "If-Match names another version than the record's current one (nothing changed)"),
        (413, "The request body is larger than the route's limit (MAX_REQUEST_BODY_MB)"),
        (422, "Invalid body, parameter or reference (details.errors has field paths)"),
        (500, "Internal error"),
        (502, "An upstream service failed"),
        (503, "Database unavailable or not migrated"),
    )
}


@dataclass(frozen=True, slots=True)
class ListFilter:
    """A query parameter of a list endpoint and the filter it becomes."""

    param: str
    annotation: Any
    field: str | None = None
    op: Literal["eq", "contains_all", "tags", "text"] = "eq"
    description: str = ""

    def to_filter(self, value: Any) -> Filter | None:
        if value is None or value == []:
            return None
        name = self.field or self.param
        if self.op == "tags":
            return tags_filter(name, [value] if isinstance(value, str) else value)
        if self.op == "text":
            return contains_text(name, value.strip()) if value.strip() else None
        return contains_all(name, value) if self.op == "contains_all" else eq(name, value)


def tags_filter(field: str, given: list[str]) -> Filter | None:
    """`tags=a&tags=b`: records having every tag (ours). `tags=a,b` — one value with commas, as
    the existing API's clients send it: records having any of them (the existing semantics)."""
    if len(given) == 1 and "," in given[0]:
        wanted = [t.strip() for t in given[0].split(",") if t.strip()]
        return contains_any(field, wanted) if wanted else None
    return contains_all(field, given)


TAGS = ListFilter(
    "tags",
    list[str] | None,
    op="tags",
    description="Records having every tag given (repeat the parameter); one comma-separated "
    "value (`tags=a,b`, as the existing API took it): records having any of them.",
)
#: The existing API's guardrail list filter: one tag.
TAG = ListFilter("tag", str | None, field="tags", op="tags", description="Records having this tag.")


def owner_filter(
    model: type[Entity], principal: Principal, owner: str | None
) -> tuple[Filter, ...]:
    if owner is None:
        return ()
    if not principal.is_admin and owner != principal.identity:
        raise PermissionDenied("only admins may list other owners' records")
    if model.owner_field is None:
        raise UnsupportedQuery(
            f"{model.collection} records have no owner of their own; filter by their parent"
        )
    return (eq(model.owner_field, owner),)


#: The list parameters of a request without a query string: the whole list, no filter.
EVERYTHING = Paging(None, None, ())


def _list_endpoint(
    model: type[Entity], filters: Sequence[ListFilter], sort: tuple[Sort, ...]
) -> tuple[Any, ListOperation]:
    hidden = HIDDEN.get(model, frozenset())

    async def list_page(
        ctx: ApiContext,
        principal: Principal,
        paging: Paging,
        owner: str | None,
        params: dict[str, Any],
        url: Callable[[], URL],
    ) -> Response:
        wanted = [*paging.filters, *owner_filter(model, principal, owner)]
        wanted += [f for lf in filters if (f := lf.to_filter(params.get(lf.param))) is not None]
        async with ctx.store.unit_of_work(readonly=True) as repos:
            service = records_for(model, repos, principal, ctx.cipher)
            if model in PRESENTED:  # records shaped one by one (masks, derived fields)
                page = await service.list(
                    wanted, limit=paging.limit, cursor=paging.cursor, sort=sort
                )
                body = await present_many(model, page.items, repos, ctx)
                return page_response(body, page.next_cursor, url)
            found = await service.list_json(
                wanted, limit=paging.limit, cursor=paging.cursor, sort=sort, omit=hidden
            )
        return page_response(found.items, found.next_cursor, url)

    async def list_records(request: Any, ctx: Any, common: Any, **params: Any) -> Response:
        principal, paging, owner = common
        assert isinstance(paging, Paging)
        return await list_page(ctx, principal, paging, owner, params, lambda: request.url)

    async def list_all(ctx: ApiContext, principal: Principal) -> Response:
        return await list_page(ctx, principal, EVERYTHING, None, {}, _no_url)

    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Ctx),
        inspect.Parameter("common", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=CommonList),
    ]
    for lf in filters:
        parameters.append(
            inspect.Parameter(
                lf.param,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[lf.annotation, Query(description=lf.description)],
            )
        )
    list_records.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return list_records, list_all


def _no_url() -> URL:
    raise AssertionError("a list without a limit has no next page")


def outbound_allow_list(ctx: ApiContext) -> HostPolicy:
    return HostPolicy.parse(ctx.settings.outbound_allowed_hosts)


ListOperation = Callable[[ApiContext, Principal], Awaitable[Response]]
RecordOperation = Callable[[ApiContext, Principal, str], Awaitable[Response]]
BodyOperation = Callable[[ApiContext, Principal, Any], Awaitable[Response]]
#: (ctx, caller, record id, body, the If-Match header or None)
UpdateOperation = Callable[[ApiContext, Principal, str, Any, str | None], Awaitable[Response]]
#: (ctx, caller, record id, the If-Match header or None)
DeleteOperation = Callable[[ApiContext, Principal, str, str | None], Awaitable[Response]]


def record_response(body: bytes, record: Entity, status_code: int = 200) -> Response:
    """A record's JSON with its `ETag` (its version)."""
    response = json_response(body, status_code)
    response.headers["ETag"] = etag(record.version)
    return response


@dataclass(frozen=True, slots=True)
class CrudOperations:
    """What the routes of one resource do, callable without FastAPI: the routes call these,
    and so does `api.fastpath` for requests it can answer without routing and dependency
    solving (the same code, so the same behaviour)."""

    prefix: str
    list_all: ListOperation  # GET prefix without a query string
    get: RecordOperation
    create: BodyOperation | None
    create_schema: type[BaseModel] | None
    update: UpdateOperation | None
    update_schema: type[BaseModel] | None
    delete: DeleteOperation | None
    #: The route endpoints (how `api.fastpath` recognises these routes among the app's).
    endpoints: frozenset[Any]


class CrudRouter(APIRouter):
    """The router of one resource, with its operations for `api.fastpath`."""

    operations: CrudOperations


def crud_router(
    model: type[Entity],
    prefix: str,
    tag: str,
    *,
    filters: Sequence[ListFilter] = (),
    sort: tuple[Sort, ...] = (Sort("created_at", True),),
    writable: bool = True,
    creatable: bool = True,
    deletable: bool = True,
) -> CrudRouter:
    """The five routes of `model` under `prefix`."""
    router = CrudRouter(prefix=prefix, tags=[tag], responses=ERRORS)
    Out = output_schema(model)
    list_records, list_all = _list_endpoint(model, filters, sort)
    router.add_api_route(
        "",
        list_records,
        methods=["GET"],
        response_model=page_schema(model),
        summary=f"List {model.collection}",
    )

    async def get_one(ctx: ApiContext, caller: Principal, record_id: str) -> Response:
        async with ctx.store.unit_of_work(readonly=True) as repos:
            record = await records_for(model, repos, caller, ctx.cipher).get(record_id)
            body = await present_one(record, repos, ctx)
        return record_response(body, record)

    @router.get("/{record_id}", response_model=Out, summary=f"Get one of {model.collection}")
    async def get_record(record_id: RecordId, ctx: Ctx, caller: Caller) -> Response:
        return await get_one(ctx, caller, record_id)

    # Creates and updates of plain records read, then write once: no transaction needed
    # (`unit_of_work(single_write=True)`); presenting them reads nothing afterwards.
    single_write = writes_once(model) and model not in PRESENTED
    create_one: BodyOperation | None = None
    Create: type[BaseModel] | None = None
    if creatable:
        Create = create_schema(model)

        async def create_one(ctx: ApiContext, caller: Principal, body: Any) -> Response:
            values = body.model_dump(exclude_unset=False)
            check_saved_addresses(model, values, caller, outbound_allow_list(ctx))
            async with ctx.store.unit_of_work(single_write=single_write) as repos:
                service = records_for(model, repos, caller, ctx.cipher)
                record = await service.create(values)
                answer = await present_one(record, repos, ctx)
            return record_response(answer, record, 201)

        async def create_record(ctx: Ctx, caller: Caller, body: Any) -> Response:
            assert create_one is not None
            return await create_one(ctx, caller, body)

        create_record.__annotations__["body"] = Annotated[Create, Body()]
        router.add_api_route(
            "",
            create_record,
            methods=["POST"],
            status_code=201,
            response_model=Out,
            summary=f"Create one of {model.collection}",
        )

    update_one: UpdateOperation | None = None
    Update: type[BaseModel] | None = None
    if writable:
        Update = update_schema(model)

        async def update_one(
            ctx: ApiContext, caller: Principal, record_id: str, body: Any, if_match: str | None
        ) -> Response:
            changes = body.model_dump(exclude_unset=True)
            expected = expected_versions(if_match)
            check_saved_addresses(model, changes, caller, outbound_allow_list(ctx))
            async with ctx.store.unit_of_work(single_write=single_write) as repos:
                service = records_for(model, repos, caller, ctx.cipher)
                record = await service.update(record_id, changes, expected_versions=expected)
                answer = await present_one(record, repos, ctx)
            return record_response(answer, record)

        async def update_record(
            record_id: RecordId, ctx: Ctx, caller: Caller, body: Any, if_match: IfMatch = None
        ) -> Response:
            assert update_one is not None
            return await update_one(ctx, caller, record_id, body, if_match)

        update_record.__annotations__["body"] = Annotated[Update, Body()]
        for method in ("PATCH", "PUT"):
            # PUT is what clients of the existing API send; both change only the fields given.
            router.add_api_route(
                "/{record_id}",
                update_record,
                methods=[method],
                response_model=Out,
                summary=f"Change some fields of one of {model.collection} "
                "(only the fields given; null clears a nullable field)",
                operation_id=f"{method.lower()}_{model.collection}_record",
            )

    endpoints: set[Any] = {list_records, get_record}
    if creatable:
        endpoints.add(create_record)
    if writable:
        endpoints.add(update_record)
    delete_one: DeleteOperation | None = None
    if deletable:

        async def delete_one(
            ctx: ApiContext, caller: Principal, record_id: str, if_match: str | None
        ) -> Response:
            expected = expected_versions(if_match)
            async with ctx.store.unit_of_work() as repos:
                service = records_for(model, repos, caller, ctx.cipher)
                await service.delete(record_id, expected_versions=expected)
            return Response(status_code=204)

        @router.delete("/{record_id}", status_code=204, summary=f"Delete one of {model.collection}")
        async def delete_record(
            record_id: RecordId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
        ) -> Response:
            assert delete_one is not None
            return await delete_one(ctx, caller, record_id, if_match)

        endpoints.add(delete_record)

    router.operations = CrudOperations(
        prefix=prefix,
        list_all=list_all,
        get=get_one,
        create=create_one,
        create_schema=Create,
        update=update_one,
        update_schema=Update,
        delete=delete_one,
        endpoints=frozenset(endpoints),
    )
    return router

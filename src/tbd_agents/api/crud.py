"""Router factory: list / create / get / partial update / delete for one resource.

Every resource gets the same five routes with the same rules (201 on create, 204 on delete,
PATCH semantics, 404 for unknown or malformed ids, cursor pagination, the common filters plus the
resource's own), so the behaviour is written and tested once.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel

from tbd_agents.api.deps import ApiContext, Caller, CommonList, Ctx, Paging
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
from tbd_agents.services.catalog import check_saved_addresses, records_for
from tbd_agents.storage.protocol import Filter, Sort, contains_all, contains_any, eq

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
    op: Literal["eq", "contains_all", "tags"] = "eq"
    description: str = ""

    def to_filter(self, value: Any) -> Filter | None:
        if value is None or value == []:
            return None
        name = self.field or self.param
        if self.op == "tags":
            return tags_filter(name, [value] if isinstance(value, str) else value)
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


def _list_endpoint(
    model: type[Entity], filters: Sequence[ListFilter], sort: tuple[Sort, ...]
) -> Any:
    hidden = HIDDEN.get(model, frozenset())

    async def list_records(request: Any, ctx: Any, common: Any, **params: Any) -> Response:
        principal, paging, owner = common
        assert isinstance(paging, Paging)
        wanted = [*paging.filters, *owner_filter(model, principal, owner)]
        wanted += [f for lf in filters if (f := lf.to_filter(params.get(lf.param))) is not None]
        async with ctx.store.unit_of_work(readonly=True) as repos:
            service = records_for(model, repos, principal, ctx.cipher)
            if model in PRESENTED:  # records shaped one by one (masks, derived fields)
                page = await service.list(
                    wanted, limit=paging.limit, cursor=paging.cursor, sort=sort
                )
                body = await present_many(model, page.items, repos, ctx)
                return page_response(body, page.next_cursor, request.url)
            found = await service.list_json(
                wanted, limit=paging.limit, cursor=paging.cursor, sort=sort, omit=hidden
            )
        return page_response(found.items, found.next_cursor, request.url)

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
    return list_records


def outbound_allow_list(ctx: ApiContext) -> HostPolicy:
    return HostPolicy.parse(ctx.settings.outbound_allowed_hosts)


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
) -> APIRouter:
    """The five routes of `model` under `prefix`."""
    router = APIRouter(prefix=prefix, tags=[tag], responses=ERRORS)
    Out = output_schema(model)
    router.add_api_route(
        "",
        _list_endpoint(model, filters, sort),
        methods=["GET"],
        response_model=page_schema(model),
        summary=f"List {model.collection}",
    )

    @router.get("/{record_id}", response_model=Out, summary=f"Get one of {model.collection}")
    async def get_record(record_id: RecordId, ctx: Ctx, caller: Caller) -> Response:
        async with ctx.store.unit_of_work(readonly=True) as repos:
            record = await records_for(model, repos, caller, ctx.cipher).get(record_id)
            body = await present_one(record, repos, ctx)
        return json_response(body)

    if creatable:
        Create = create_schema(model)

        async def create_record(ctx: Ctx, caller: Caller, body: Any) -> Response:
            values = body.model_dump(exclude_unset=False)
            check_saved_addresses(model, values, caller, outbound_allow_list(ctx))
            async with ctx.store.unit_of_work() as repos:
                service = records_for(model, repos, caller, ctx.cipher)
                record = await service.create(values)
                body = await present_one(record, repos, ctx)
            return json_response(body, 201)

        create_record.__annotations__["body"] = Annotated[Create, Body()]
        router.add_api_route(
            "",
            create_record,
            methods=["POST"],
            status_code=201,
            response_model=Out,
            summary=f"Create one of {model.collection}",
        )

    if writable:
        Update = update_schema(model)

        async def update_record(
            record_id: RecordId, ctx: Ctx, caller: Caller, body: Any
        ) -> Response:
            changes = body.model_dump(exclude_unset=True)
            check_saved_addresses(model, changes, caller, outbound_allow_list(ctx))
            async with ctx.store.unit_of_work() as repos:
                service = records_for(model, repos, caller, ctx.cipher)
                record = await service.update(record_id, changes)
                body = await present_one(record, repos, ctx)
            return json_response(body)

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

    if deletable:

        @router.delete("/{record_id}", status_code=204, summary=f"Delete one of {model.collection}")
        async def delete_record(record_id: RecordId, ctx: Ctx, caller: Caller) -> Response:
            async with ctx.store.unit_of_work() as repos:
                await records_for(model, repos, caller, ctx.cipher).delete(record_id)
            return Response(status_code=204)

    return router

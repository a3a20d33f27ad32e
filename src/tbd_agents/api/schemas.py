"""Request and response schemas derived from the domain models.

For each resource: `<Model>Create` (every writable field, unknown fields refused), `<Model>Update`
(the same fields, all optional: only the fields present in the body change, and `null` clears a
nullable field), `<Model>Out` (what responses carry: stored fields minus secrets), and
`<Model>Page` (a JSON array of `<Model>Out`; the next page's cursor travels in headers). Responses are serialised straight from the domain models
(pydantic-core), never through an intermediate dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Annotated, Any, Literal, cast

import annotated_types
from fastapi import Response
from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo
from starlette.datastructures import URL

from tbd_agents.domain.models import (
    Agent,
    Entity,
    McpServer,
    Memory,
    NameRule,
    Provider,
    TaskExecution,
    Token,
    Workflow,
)
from tbd_agents.services.resources import spec_of
from tbd_agents.services.tokens import MASK
from tbd_agents.services.validation import (
    AgentInput,
    Input,
    McpServerInput,
    ProviderInput,
    WorkflowInput,
)
from tbd_agents.storage.common import records_json

#: Request bases with checks beyond the field types (the stored model stays lenient on read).
INPUT_BASES: dict[type[Entity], type[Input]] = {
    Agent: AgentInput,
    McpServer: McpServerInput,
    Provider: ProviderInput,
    Workflow: WorkflowInput,
}

#: `extras` holds the keys of an existing document that no field names (see domain.models): kept
#: and returned as they are, never written through the API. `version` is returned (the number
#: the `ETag` quotes) and ignored in request bodies: a change is made conditional by `If-Match`
#: only, so a client that sends back a record it read keeps today's last-writer-wins behaviour.
SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "version", "extras"})

#: Stored fields never sent back (secrets; large derived data).
HIDDEN: dict[type[Entity], frozenset[str]] = {
    Token: frozenset({"encrypted_value"}),
    Memory: frozenset({"embedding"}),
}

#: Write-only request fields that are not stored as such.
EXTRA_INPUT: dict[type[Entity], dict[str, Any]] = {
    Token: {
        "value": (
            str,
            Field(
                min_length=1,
                max_length=65536,
                description="The secret; write-only, stored encrypted.",
            ),
        )
    },
}


#: Response fields derived when a record is sent (`api.present`), not stored.
DERIVED_OUTPUT: dict[type[Entity], dict[str, Any]] = {
    Token: {
        "value": (Literal["********"], Field(description="Always masked.")),
        "masked_value": (
            str,
            Field(description='"…" and the last 4 characters of the secret, or "****".'),
        ),
        "created_by": (str, Field(description='Who stored it ("" when unknown).')),
    },
    Provider: {"api_key_token_name": (str, Field(description='"" when none is set.'))},
    TaskExecution: {
        "workflow_title": (str | None, Field(description="Title of the run's workflow.")),
        "agent_name": (str | None, Field(description="Name of the workflow's agent.")),
        "elapsed_seconds": (float | None, Field(description="From start to finish (or now).")),
        "progress": (
            dict[str, Any] | None,
            Field(description="`{todos: [{id, title, status}], current_step, percent_complete}`."),
        ),
    },
    Workflow: {
        "github_user": (str, Field(description='The owner ("" when an old record has none).')),
        "model": (str, Field(description='"" when an old record has none.')),
        "task_count": (int, Field(description="Runs of this workflow.")),
        "last_task_status": (str | None, Field(description="Status of the latest run.")),
        "last_task_at": (str | None, Field(description="When the latest run was created.")),
    },
}


def read_only_fields(model: type[Entity]) -> frozenset[str]:
    """What responses carry that requests may not set: dropped from request bodies."""
    spec = spec_of(model)
    owner = {model.owner_field} if model.owner_field else set()
    derived = set(DERIVED_OUTPUT.get(model, {})) - {"value"}
    return frozenset(SERVER_FIELDS | owner | spec.managed | derived | HIDDEN.get(model, set()))


def writable_fields(model: type[Entity]) -> list[str]:
    spec = spec_of(model)
    owner = {model.owner_field} if model.owner_field else set()
    return [
        name
        for name in model.model_fields
        if name not in SERVER_FIELDS and name not in owner and name not in spec.managed
    ]


#: Range of PostgreSQL `integer`, the column type of every `int` field of the domain models: a
#: larger number is refused with 422 naming the field instead of failing in the driver.
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1


def _int4_bounds(info: FieldInfo) -> list[Any]:
    if info.annotation not in (int, int | None):
        return []
    present = {
        attr for meta in info.metadata for attr in ("ge", "gt", "le", "lt") if hasattr(meta, attr)
    }
    bounds: list[Any] = []
    if not present & {"ge", "gt"}:
        bounds.append(annotated_types.Ge(INT4_MIN))
    if not present & {"le", "lt"}:
        bounds.append(annotated_types.Le(INT4_MAX))
    return bounds


def _name_bounds(info: FieldInfo) -> list[Any]:
    return [
        annotated_types.Len(rule.min_length, rule.max_length)
        for rule in info.metadata
        if isinstance(rule, NameRule)
    ]


def _annotated(info: FieldInfo) -> Any:
    base = info.annotation
    metadata = [*info.metadata, *_int4_bounds(info), *_name_bounds(info)]
    return Annotated[(base, *metadata)] if metadata else base


@cache
def create_schema(model: type[Entity]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in writable_fields(model):
        info = model.model_fields[name]
        if info.default_factory is not None:
            default: Any = Field(default_factory=info.default_factory)
        elif info.is_required():
            default = Field()
        else:
            default = Field(default=info.default)
        fields[name] = (_annotated(info), default)
    fields.update(EXTRA_INPUT.get(model, {}))
    schema = cast(
        type[Input],
        create_model(f"{model.__name__}Create", __base__=INPUT_BASES.get(model, Input), **fields),
    )
    schema.ignored_fields = read_only_fields(model) - set(fields)
    return schema


@cache
def update_schema(model: type[Entity]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in writable_fields(model):
        # Immutable fields are accepted with their current value (Records.update refuses others).
        fields[name] = (_annotated(model.model_fields[name]), Field(default=None))
    for name, (annotation, info) in EXTRA_INPUT.get(model, {}).items():
        fields[name] = (Annotated[annotation, info], Field(default=None))
    schema = cast(
        type[Input],
        create_model(f"{model.__name__}Update", __base__=INPUT_BASES.get(model, Input), **fields),
    )
    schema.ignored_fields = read_only_fields(model) - set(fields)
    return schema


@cache
def output_schema(model: type[Entity]) -> type[BaseModel]:
    hidden = HIDDEN.get(model, frozenset())
    fields: dict[str, Any] = {
        name: (info.annotation, Field())
        for name, info in model.model_fields.items()
        if name not in hidden
    }
    fields.update(DERIVED_OUTPUT.get(model, {}))
    schema: type[BaseModel] = create_model(f"{model.__name__}Out", **fields)
    return schema


@cache
def page_schema(model: type[Entity]) -> Any:
    """A list response: a bare JSON array of the model's output schema."""
    return list[output_schema(model)]  # type: ignore[misc]


def _exclude(model: type[Entity]) -> set[str] | None:
    hidden = HIDDEN.get(model)
    return set(hidden) if hidden else None


def _masked(model: type[Entity], raw: bytes) -> bytes:
    if model is Token:
        return raw[:-1] + b',"value":"' + MASK.encode() + b'"}'
    return raw


def record_json(record: Entity) -> bytes:
    """One record as its response JSON (secrets removed or masked)."""
    model = type(record)
    return _masked(model, record.__pydantic_serializer__.to_json(record, exclude=_exclude(model)))


def page_json(model: type[Entity], items: Iterable[Entity]) -> bytes:
    """The records as one JSON array, in one serialisation pass."""
    rows = list(items)
    if model is Token:
        return b"[" + b",".join(record_json(r) for r in rows) + b"]"
    return records_json(model, rows, HIDDEN.get(model, frozenset()))


def page_headers(request_url: URL, next_cursor: str | None) -> dict[str, str]:
    """`X-Next-Cursor` and an RFC 8288 `Link: <…>; rel="next"` when another page follows."""
    if next_cursor is None:
        return {}
    link = str(request_url.include_query_params(cursor=next_cursor))
    return {"X-Next-Cursor": next_cursor, "Link": f'<{link}>; rel="next"'}


def page_response(
    items: bytes, next_cursor: str | None, request_url: URL | Callable[[], URL]
) -> Response:
    """A list response: the bare JSON array `items`, the next cursor in headers (`request_url`
    may be a function returning it: called only when there is a next page)."""
    if next_cursor is None:
        return Response(content=items, media_type="application/json")
    url = request_url if isinstance(request_url, URL) else request_url()
    return Response(
        content=items, media_type="application/json", headers=page_headers(url, next_cursor)
    )


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, status_code=status_code, media_type="application/json")

"""Knowledge and memory routes that go through the ingestion, retrieval and memory services:
text and file ingestion (multipart upload), content download, deletes that take the vectors
along, hybrid knowledge search, memory upsert/search with embeddings."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile
from pydantic import AwareDatetime, BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from tbd_agents.api.crud import ERRORS, record_response
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.preconditions import IfMatch, expected_versions
from tbd_agents.api.schemas import (
    create_schema,
    json_response,
    output_schema,
    record_json,
    update_schema,
)
from tbd_agents.domain.enums import KnowledgeSourceStatus, MemoryScope
from tbd_agents.domain.models import KnowledgeItem, KnowledgeSource, Memory
from tbd_agents.errors import InvalidData, StorageError
from tbd_agents.services.catalog import records_for
from tbd_agents.services.knowledge import KnowledgeServices, build_knowledge_services
from tbd_agents.services.knowledge import test_source as test_knowledge_source
from tbd_agents.services.memory import SearchMode
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.services.validation import Input

log = logging.getLogger("tbd_agents.api")
router = APIRouter(tags=["knowledge"], responses=ERRORS)
memories = APIRouter(tags=["memories"], responses=ERRORS)
RecordId = Annotated[str, Path(description="Record id.")]


async def attach(ctx: ApiContext) -> None:
    """Build the knowledge and memory services once per app; on failure their routes answer 503."""
    try:
        ctx.services["knowledge"] = await build_knowledge_services(ctx.settings, ctx.store)
        ctx.services["vector_store"] = ctx.services["knowledge"].vectors
    except Exception as exc:  # start anyway: the rest of the API does not need vectors
        log.error("knowledge and memory services are unavailable: %s", exc, exc_info=True)
        ctx.services["knowledge_error"] = f"{type(exc).__name__}: {exc}"


def _knowledge(ctx: ApiContext) -> KnowledgeServices:
    service = ctx.services.get("knowledge")
    if service is None:
        reason = ctx.services.get("knowledge_error", "not configured")
        raise StorageError(
            f"knowledge and memory services are unavailable ({reason}); see the server log"
        )
    assert isinstance(service, KnowledgeServices)
    return service


ItemCreate = create_schema(KnowledgeItem)


@router.post(
    "/api/knowledge-items",
    status_code=201,
    response_model=output_schema(KnowledgeItem),
    summary="Add a text item to a knowledge source (chunked and indexed)",
)
async def create_item(body: ItemCreate, ctx: Ctx, caller: Caller) -> Response:  # type: ignore[valid-type]
    item = await _knowledge(ctx).add_text(caller, body.model_dump())  # type: ignore[attr-defined]
    return record_response(record_json(item), item, 201)


def parse_tags(values: list[str] | None) -> list[str]:
    """Tags of a multipart form: each field a JSON array string (the existing clients send
    `tags='["a","b"]'`), comma-separated names (`a,b`) or one name; repeated fields add up."""
    tags: list[str] = []
    for raw in values or []:
        text = raw.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
                raise InvalidData(
                    'tags: give a JSON array of strings (["a","b"]) or comma-separated names',
                    details={"field": "tags"},
                )
            tags += parsed
        else:
            tags += text.split(",")
    cleaned = [t.strip() for t in tags if t.strip()]
    for tag in cleaned:
        if len(tag) > 200:
            raise InvalidData("tags: a tag is at most 200 characters", details={"field": "tags"})
    return list(dict.fromkeys(cleaned))


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The `metadata` form field: a JSON object string (empty: none)."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidData(
            f"metadata: not JSON ({exc.msg} at character {exc.pos}); give a JSON object string",
            details={"field": "metadata"},
        ) from None
    if not isinstance(value, dict):
        raise InvalidData("metadata: give a JSON object string", details={"field": "metadata"})
    return value


ItemUpdate = update_schema(KnowledgeItem)


async def update_item(
    record_id: RecordId,
    body: ItemUpdate,  # type: ignore[valid-type]
    ctx: Ctx,
    caller: Caller,
    if_match: IfMatch = None,
) -> Response:
    changes = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    expected = expected_versions(if_match)
    for name in ("text_content", "tags"):
        if name in changes and changes[name] is None:
            raise InvalidData(f"{name} cannot be null", details={"field": name})
    item = await _knowledge(ctx).update_item(caller, record_id, changes, expected_versions=expected)
    return record_response(record_json(item), item)


for _method in ("PUT", "PATCH"):  # the same partial update under both methods
    router.add_api_route(
        "/api/knowledge-items/{record_id}",
        update_item,
        methods=[_method],
        response_model=output_schema(KnowledgeItem),
        summary="Change an item (a new text or new tags index it again)",
        operation_id=f"{_method.lower()}_knowledge_item",
    )


@router.post(
    "/api/knowledge-items/upload",
    status_code=201,
    response_model=output_schema(KnowledgeItem),
    summary="Upload a file (.txt .md .html .pdf .json .csv) into a knowledge source",
)
async def upload_item(
    ctx: Ctx,
    caller: Caller,
    source_id: Annotated[str, Form(min_length=1, max_length=128)],
    file: Annotated[UploadFile, File()],
    title: Annotated[str, Form(max_length=1000)] = "",
    tags: Annotated[
        list[str] | None,
        Form(description="A JSON array string, comma-separated names, or repeated fields."),
    ] = None,
    metadata: Annotated[
        str | None, Form(max_length=100_000, description="A JSON object string.")
    ] = None,
) -> Response:
    """The item's `content_type` is `image` for an image/* file, else `file`; its text is
    extracted and indexed (images and files without text are refused with 422)."""
    payload = await file.read()  # the whole body is at most MAX_UPLOAD_MB (api/limits.py)
    item = await _knowledge(ctx).add_file(
        caller,
        source_id,
        file.filename or "upload",
        payload,
        file.content_type,
        title,
        parse_tags(tags),
        parse_metadata(metadata),
    )
    return record_response(record_json(item), item, 201)


class ItemQueryIn(Input):
    tags: list[Annotated[str, Field(max_length=200)]] = Field(max_length=100)
    limit: int = Field(default=10, ge=1, le=1000)


@router.post(
    "/api/knowledge-items/query",
    summary="Items having any of the tags (a tag match, not a semantic search)",
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def query_items(body: ItemQueryIn, ctx: Ctx, caller: Caller) -> Response:
    """`{"items": [...]}`: up to `limit` items of the caller's sources (admins: all) having at
    least one of `tags`, newest first. For a semantic search use POST /api/knowledge/search."""
    items = await _knowledge(ctx).items_with_tags(caller, body.tags, body.limit)
    return json_response(b'{"items":[' + b",".join(record_json(i) for i in items) + b"]}")


class SourceTestOut(BaseModel):
    success: bool
    error: str | None = None
    status: KnowledgeSourceStatus


@router.post(
    "/api/knowledge-sources/{record_id}/test",
    response_model=SourceTestOut,
    summary="Test a knowledge source's connection (records status and last_error)",
)
async def test_source(record_id: RecordId, ctx: Ctx, caller: Caller) -> SourceTestOut:
    """Sources stored in the hub (mongo_db, manual, ...) succeed; `vector_db` / `qdrant`: the
    collection exists on the Qdrant server; `pgvector`: the database has the `vector`
    extension. A failure is an answer (`success: false`), never a 5xx."""
    error = await test_knowledge_source(
        ctx.store, caller, ctx.cipher, outbound_guard(ctx.settings), record_id
    )
    status = KnowledgeSourceStatus.ERROR if error else KnowledgeSourceStatus.CONNECTED
    return SourceTestOut(success=error is None, error=error, status=status)


@router.get(
    "/api/knowledge-items/{record_id}/content",
    summary="Download an item's file (or its text)",
    responses={200: {"content": {"application/octet-stream": {}, "text/plain": {}}}},
)
async def item_content(record_id: RecordId, ctx: Ctx, caller: Caller) -> Response:
    item, stored = await _knowledge(ctx).content(caller, record_id)
    if stored is None:
        return Response((item.text_content or "").encode(), media_type="text/plain; charset=utf-8")
    return Response(
        stored.data,
        media_type=stored.content_type or "application/octet-stream",
        headers={"Content-Disposition": content_disposition(stored.file_name or "download")},
    )


def content_disposition(name: str) -> str:
    """`attachment` with the name twice (RFC 6266): an ASCII `filename` for old clients
    (anything else becomes `_`) and the exact name as UTF-8 in `filename*` (RFC 5987)."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", name).strip() or "download"
    exact = quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


@router.delete(
    "/api/knowledge-items/{record_id}",
    status_code=204,
    summary="Delete an item with its chunks and file",
)
async def delete_item(
    record_id: RecordId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)
    await _knowledge(ctx).delete_item(caller, record_id, expected_versions=expected)
    return Response(status_code=204)


@router.delete(
    "/api/knowledge-sources/{record_id}",
    status_code=204,
    summary="Delete a source with its items, chunks and files (409 while agents use it)",
)
async def delete_source(
    record_id: RecordId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)
    async with ctx.store.unit_of_work() as repos:
        sources = records_for(KnowledgeSource, repos, caller, ctx.cipher)
        await sources.delete(record_id, expected_versions=expected)
    knowledge = ctx.services.get("knowledge")
    if isinstance(knowledge, KnowledgeServices):
        await knowledge.forget_source_vectors(record_id)
    return Response(status_code=204)


class SearchIn(Input):
    query: str = Field(min_length=1, max_length=10_000)
    source_ids: list[str] = Field(
        default_factory=list,
        description="Default: every source you can list (your own; every source for an admin).",
    )
    tags: list[str] = Field(default_factory=list)
    k: int = Field(default=5, ge=1, le=50)


class CitationOut(BaseModel):
    item_id: str
    chunk_index: int
    start_offset: int
    end_offset: int
    source_id: str
    title: str
    file_name: str | None


class ChunkOut(BaseModel):
    text: str
    score: float
    similarity: float | None
    keyword_rank: int | None
    citation: CitationOut


@router.post(
    "/api/knowledge/search",
    response_model=list[ChunkOut],
    summary="Hybrid (vector + keyword) search",
)
async def search_knowledge(body: SearchIn, ctx: Ctx, caller: Caller) -> list[ChunkOut]:
    hits = await _knowledge(ctx).search(caller, body.query, body.source_ids, body.tags, body.k)
    return [
        ChunkOut(
            text=h.text,
            score=h.score,
            similarity=h.similarity,
            keyword_rank=h.keyword_rank,
            citation=CitationOut(**dataclasses.asdict(h.citation)),
        )
        for h in hits
    ]


# --- memories -------------------------------------------------------------------------------
TtlSeconds = Annotated[int | None, Field(default=None, ge=1, le=10 * 365 * 86400)]


class MemoryCreate(Input):
    agent_id: str = Field(min_length=1, max_length=128)
    key: str = Field(min_length=1, max_length=512)
    value: str = ""
    scope: MemoryScope = MemoryScope.AGENT
    session_id: str | None = Field(
        default=None,
        max_length=128,
        description="Required for scope session (default: metadata.workflow_id).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: AwareDatetime | None = Field(default=None, description="Expiry time (existing field).")
    ttl_seconds: TtlSeconds = None
    # Accepted and ignored (existing clients may send it): the hub embeds with its own model.
    # Not in the OpenAPI document, so no client is invited to send it.
    embedding: SkipJsonSchema[list[float] | None] = Field(default=None, max_length=65536)


class MemoryUpdate(Input):
    key: str | None = Field(default=None, min_length=1, max_length=512)
    value: str | None = None
    scope: MemoryScope | None = None
    session_id: str | None = Field(default=None, max_length=128)
    metadata: dict[str, Any] | None = None
    ttl: AwareDatetime | None = Field(default=None, description="Expiry time; null clears it.")
    ttl_seconds: TtlSeconds = None
    embedding: SkipJsonSchema[list[float] | None] = Field(default=None, max_length=65536)


class MemoryHitOut(BaseModel):
    score: float
    memory: output_schema(Memory)  # type: ignore[valid-type]


@memories.post(
    "/api/memories",
    status_code=201,
    response_model=output_schema(Memory),
    summary="Remember (create or update the memory agent/scope/key, re-embedded)",
)
async def remember(body: MemoryCreate, ctx: Ctx, caller: Caller) -> Response:
    memory = await _knowledge(ctx).remember(caller, body.model_dump(exclude={"embedding"}))
    return record_response(record_json(memory), memory, 201)


@memories.get(
    "/api/memories/search",
    response_model=list[MemoryHitOut],
    summary="Keyword or semantic memory search",
)
async def search_memories(
    ctx: Ctx,
    caller: Caller,
    agent_id: Annotated[str, Query(min_length=1, max_length=128)],
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    mode: SearchMode = SearchMode.SEMANTIC,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> Response:
    hits = await _knowledge(ctx).search_memories(caller, agent_id, q, mode, session_id, k)
    rows = [
        b'{"score":' + json.dumps(h.score).encode() + b',"memory":' + record_json(h.memory) + b"}"
        for h in hits
    ]
    body = b"[" + b",".join(rows) + b"]"
    return json_response(body)


class MemorySearchIn(Input):
    agent_id: str = Field(min_length=1, max_length=128)
    query: str = Field(min_length=1, max_length=2000)
    scope: MemoryScope | None = None
    limit: int = Field(default=10, ge=1, le=100)
    mode: SearchMode = Field(
        default=SearchMode.KEYWORD,
        description="keyword (words of the query in key or value) or semantic (by meaning).",
    )
    session_id: str | None = Field(default=None, max_length=128)


def _with_score(memory: Memory, score: float) -> bytes:
    return record_json(memory)[:-1] + b',"score":' + json.dumps(score).encode() + b"}"


@memories.post(
    "/api/memories/search",
    summary="Search an agent's memories (keyword by default, or semantic)",
    responses={200: {"content": {"application/json": {"schema": {"type": "array"}}}}},
)
async def search_memories_post(body: MemorySearchIn, ctx: Ctx, caller: Caller) -> Response:
    """A JSON array of memories (each with its `score`), best first: the agent's own (every
    scope and session unless `scope` / `session_id` narrow it) and its owner's global ones."""
    hits = await _knowledge(ctx).search_memories(
        caller,
        body.agent_id,
        body.query,
        body.mode,
        body.session_id,
        body.limit,
        scope=body.scope,
        every_session=True,
    )
    return json_response(b"[" + b",".join(_with_score(h.memory, h.score) for h in hits) + b"]")


@memories.get(
    "/api/memories/stm/{agent_id}",
    response_model=list[output_schema(Memory)],  # type: ignore[misc]
    summary="An agent's short-term memory: its most recent memories, newest first",
)
async def short_term_memory(
    agent_id: Annotated[str, Path(description="Agent id.")],
    ctx: Ctx,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Response:
    """The agent's own memories of every scope, most recently written first (what the existing
    system kept in its Redis STM, 20 per agent). 404 for an agent the caller may not see."""
    rows = await _knowledge(ctx).recent_memories(caller, agent_id, limit)
    return json_response(b"[" + b",".join(record_json(m) for m in rows) + b"]")


async def update_memory(
    record_id: RecordId, body: MemoryUpdate, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    changes = body.model_dump(exclude_unset=True, exclude={"embedding"})
    expected = expected_versions(if_match)
    for name in ("key", "value", "scope"):
        if name in changes and changes[name] is None:
            raise InvalidData(f"{name} cannot be null", details={"field": name})
    memory = await _knowledge(ctx).update_memory(
        caller, record_id, changes, expected_versions=expected
    )
    return record_response(record_json(memory), memory)


for _method in ("PUT", "PATCH"):  # the same partial update under both methods
    memories.add_api_route(
        "/api/memories/{record_id}",
        update_memory,
        methods=[_method],
        response_model=output_schema(Memory),
        summary="Change a memory (only the fields given; re-embedded, its vector updated)",
        operation_id=f"{_method.lower()}_memory",
    )


@memories.delete(
    "/api/memories/{record_id}", status_code=204, summary="Forget a memory (row and vector)"
)
async def delete_memory(
    record_id: RecordId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)
    await _knowledge(ctx).delete_memory(caller, record_id, expected_versions=expected)
    return Response(status_code=204)

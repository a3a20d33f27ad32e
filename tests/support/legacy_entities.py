"""The configuration documents of the generated legacy database (`tests.support.legacy_dump`):
tokens, providers, MCP servers, skills, custom tools, guardrails, knowledge sources and items,
GridFS files; and the `Builder` that makes deterministic ids and times.

One function per collection adds every shape the existing system allows (the `suffix` variants,
used for volume, keep unique names unique). `tests.support.legacy_activity` adds the rest.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

from bson import Decimal128, Int64, ObjectId

from tests.support.legacy_dump import (
    CHUNK_SIZE,
    UNICODE,
    LegacyDatabase,
    fernet_token,
    utc,
)

Doc = dict[str, Any]
_BASE = datetime(2023, 9, 1, 8, 0, 0)
_CHUNK = CHUNK_SIZE


class Builder:
    """Builds one LegacyDatabase: deterministic ids, times, and the documents."""

    def __init__(self, scale: int, seed: int) -> None:
        self.db = LegacyDatabase(scale=scale, seed=seed)
        self.rng = random.Random(seed)
        self._seq = 0
        self._minutes = 0

    # --- ids and times ---------------------------------------------------------------------
    def when(self, minutes: int | None = None) -> datetime:
        """The next creation time (naive, whole milliseconds), 7 minutes after the previous."""
        if minutes is None:
            self._minutes += 7
            minutes = self._minutes
        return _BASE + timedelta(minutes=minutes, milliseconds=(minutes * 37) % 1000)

    def oid(self, at: datetime | None = None) -> ObjectId:
        self._seq += 1
        stamp = int(utc(at or self.when()).timestamp())
        return ObjectId(f"{stamp:08x}{self.db.seed:06x}{self._seq:010x}")

    def add(self, collection: str, doc: Doc, name: str | None = None) -> Doc:
        self.db.documents.setdefault(collection, []).append(doc)
        if name:
            self.db.ids[name] = str(doc["_id"])
        return doc

    def new(
        self, collection: str, label: str | None = None, /, *, stamps: bool = True, **fields: Any
    ) -> Doc:
        """A document with an ObjectId `_id` whose time is its `created_at` (if `stamps`)."""
        created = self.when()
        doc: Doc = {"_id": self.oid(created)}
        doc.update(fields)
        if stamps:
            doc.setdefault("created_at", created)
            doc.setdefault("updated_at", created + timedelta(hours=3, milliseconds=250))
        return self.add(collection, doc, label)

    @staticmethod
    def legacy_extras(tag: str) -> Doc:
        """Unknown fields the existing system's older versions (or hand edits) left behind."""
        return {
            "legacy_flag": True,
            "legacy": {
                "imported_from": f"tbd-agents 0.3 {tag}",
                "opts": {"retries": Int64(3), "ratio": 0.1, "nested": [1, {"b": None}, []]},
                "migrated_at": datetime(2023, 1, 2, 3, 4, 5, 678000),
            },
        }


# ------------------------------------------------------------------------------- entities


def add_tokens(b: Builder, suffix: str = "") -> None:
    plain = {
        "GITHUB_PAT": "ghp_" + "a1B2" * 9,
        # API keys are ASCII (HTTP headers carry nothing else); other secrets may be any text.
        "OPENAI_KEY": "sk-proj-0mEga9-" + "Xy7_" * 10,
        "ANTHROPIC_KEY": "sk-ant-api03-" + "z" * 60,
        "AZURE_KEY": "0123456789abcdef0123456789abcdef",
        "PG_DSN": "postgresql://kb:p%40ss@db.internal:5432/kb",
        "QDRANT_KEY": "",  # an empty secret is still a secret
        "CUSTOM_LLM_KEY": "key with spaces and 中文",
        "CLAUDE_KEY": "sk-ant-api03-direct-" + "k9" * 20,
    }
    for i, (name, value) in enumerate(plain.items()):
        token_name = name + suffix
        b.db.secrets[token_name] = value
        iv = hashlib.sha256(f"{b.db.seed}:{token_name}".encode()).digest()[:16]
        created = b.when()
        encrypted = fernet_token(b.db.fernet_key, value, at=int(utc(created).timestamp()), iv=iv)
        if i == 0:
            b.new(
                "tokens",
                "token_full" if not suffix else None,
                name=token_name,
                encrypted_value=encrypted,
                description="Personal access token ✓ " + UNICODE,
                created_by="octocat",
                **b.legacy_extras("tokens"),
            )
        elif i == 1:  # an old document: no description, no created_by, no timestamps
            b.new("tokens", stamps=False, name=token_name, encrypted_value=encrypted)
        else:
            b.new(
                "tokens",
                name=token_name,
                encrypted_value=encrypted,
                description="" if i % 2 else f"{name.lower()} secret",
                created_by=None if i % 3 else "server",
            )


def add_providers(b: Builder, suffix: str = "") -> None:
    t = suffix
    b.new(
        "providers",
        "provider_copilot" if not t else None,
        name="copilot" + t,
        provider_type="github_copilot",
        api_key_token_name="GITHUB_PAT" + t,
        base_url=None,
        auth_type="x-api-key",
        azure_api_version="2024-12-01-preview",
        azure_deployment=None,
        description="",
    )
    b.new(
        "providers",
        "provider_openai" if not t else None,
        name="openai" + t,
        provider_type="openai",
        api_key_token_name="OPENAI_KEY" + t,
        base_url="https://api.openai.com/v1",
        auth_type="x-api-key",
        azure_api_version="2024-12-01-preview",
        description="OpenAI — production",
    )
    b.new(
        "providers",
        "provider_anthropic" if not t else None,
        name="anthropic-gateway" + t,
        provider_type="anthropic",
        api_key_token_name="ANTHROPIC_KEY" + t,
        base_url="https://gateway.example.com/anthropic/v1",
        auth_type="bearer",
        azure_api_version="2024-12-01-preview",
        azure_deployment=None,
        description="Claude through the company gateway 🛡️",
    )
    b.new(
        "providers",
        "provider_azure" if not t else None,
        name="azure" + t,
        provider_type="azure_openai",
        api_key_token_name="AZURE_KEY" + t,
        base_url="https://contoso.openai.azure.com",
        auth_type="x-api-key",
        azure_api_version="2024-10-21",
        azure_deployment="gpt-4o-prod",
        description="Azure OpenAI",
        **b.legacy_extras("providers"),
    )
    # Old document: provider_type and the token name only.
    b.new(
        "providers",
        "provider_custom" if not t else None,
        stamps=False,
        name="local-llm" + t,
        provider_type="custom",
        api_key_token_name="CUSTOM_LLM_KEY" + t,
        base_url="http://llm.internal:8080/v1",
    )
    # Anthropic called directly: auth_type absent (the existing default, x-api-key), no base_url.
    b.new(
        "providers",
        "provider_anthropic_direct" if not t else None,
        name="anthropic" + t,
        provider_type="anthropic",
        api_key_token_name="CLAUDE_KEY" + t,
        base_url=None,
        description="Claude, api.anthropic.com",
    )


def add_mcp_servers(b: Builder, suffix: str = "") -> list[str]:
    ids = []
    doc = b.new(
        "mcp_servers",
        "mcp_stdio" if not suffix else None,
        name="filesystem" + suffix,
        transport_type="stdio",
        connection_config={
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/data"],
            "env": {"GITHUB_TOKEN": "{{token:GITHUB_PAT}}", "LANG": "C.UTF-8"},
        },
        allowed_tools=[],
        tags=["fs", "local"],
        status="connected",
        last_error=None,
        **b.legacy_extras("mcp_servers"),
    )
    ids.append(str(doc["_id"]))
    doc = b.new(
        "mcp_servers",
        "mcp_sse" if not suffix else None,
        name="search (sse)" + suffix,
        transport_type="sse",
        connection_config={
            "url": "https://mcp.example.com/sse",
            "headers": {"Authorization": "Bearer {{token:OPENAI_KEY}}"},
        },
        allowed_tools=["search", "fetch"],
        tags=[],
        status="registered",
    )
    ids.append(str(doc["_id"]))
    doc = b.new(
        "mcp_servers",
        "mcp_http" if not suffix else None,
        name="tickets" + suffix,
        transport_type="http",
        connection_config={"url": "http://tickets.internal/mcp", "headers": {}},
        allowed_tools=["create_ticket"],
        tags=["ops"],
        status="error",
        last_error="connection refused 🔌 (errno 111)",
    )
    ids.append(str(doc["_id"]))
    # Old document: no tags, no status, no allowed_tools, no timestamps.
    doc = b.new(
        "mcp_servers",
        stamps=False,
        name="legacy stdio" + suffix,
        transport_type="stdio",
        connection_config={"command": "python", "args": ["server.py"], "env": {}},
    )
    ids.append(str(doc["_id"]))
    return ids


def add_skills(b: Builder, suffix: str = "") -> list[str]:
    a = b.new(
        "skills",
        "skill_full" if not suffix else None,
        name="summarise" + suffix,
        description="Summaries in three bullet points",
        instructions="Summarise the input.\n- keep names\n- " + UNICODE,
        tags=["writing", "ops"],
        **b.legacy_extras("skills"),
    )
    c = b.new(
        "skills", stamps=False, name="translate" + suffix, instructions="Translate to 日本語."
    )
    d = b.new(
        "skills",
        name="empty description" + suffix,
        description="",
        instructions="x",
        tags=[],
    )
    return [str(a["_id"]), str(c["_id"]), str(d["_id"])]


def add_custom_tools(b: Builder, suffix: str = "") -> list[str]:
    a = b.new(
        "custom_tools",
        "tool_full" if not suffix else None,
        name="fetch_weather" + suffix,
        description="Current weather for a city",
        source_code='def fetch_weather(city: str) -> str:\n    return f"sunny in {city} ☀️"\n',
        parameters_schema={
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 1}},
            "required": ["city"],
        },
        env_config={"API_KEY": "{{token:OPENAI_KEY}}", "UNITS": "metric"},
        tags=["weather"],
        is_enabled=True,
        is_plugin=False,
        **b.legacy_extras("custom_tools"),
    )
    c = b.new(
        "custom_tools",
        name="jira_plugin" + suffix,
        description="",
        source_code="def jira_plugin():\n    pass\n",
        parameters_schema={},
        env_config={},
        tags=[],
        is_enabled=False,
        is_plugin=True,
    )
    # Old document: before env_config / is_plugin existed.
    d = b.new(
        "custom_tools",
        stamps=False,
        name="add" + suffix,
        description="adds",
        source_code="def add(a: int, b: int) -> int:\n    return a + b\n",
        parameters_schema={"type": "object", "properties": {"a": {"type": "integer"}}},
    )
    return [str(a["_id"]), str(c["_id"]), str(d["_id"])]


def add_guardrails(b: Builder, suffix: str = "") -> list[str]:
    a = b.new(
        "guardrails",
        "guardrail_prompt" if not suffix else None,
        name="no secrets in prompts" + suffix,
        description="Blocks prompts that paste keys",
        guardrail_type="prompt",
        tags=["security"],
        enabled=True,
        prompt_config={
            "forbidden_patterns": [r"sk-[A-Za-z0-9]{20,}", r"ghp_\w+"],
            "required_patterns": [],
            "max_length": 20000,
            "min_length": None,
        },
        **b.legacy_extras("guardrails"),
    )
    c = b.new(
        "guardrails",
        "guardrail_request" if not suffix else None,
        name="ticket request schema" + suffix,
        description="",
        guardrail_type="request",
        tags=[],
        enabled=True,
        request_config={
            "json_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"ticket": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"}},
                "required": ["ticket"],
                "additionalProperties": False,
            }
        },
    )
    d = b.new(
        "guardrails",
        "guardrail_output" if not suffix else None,
        name="pii output" + suffix,
        description="PII + JSON",
        guardrail_type="output",
        tags=["pii"],
        enabled=False,
        output_config={
            "forbidden_patterns": [r"\b\d{3}-\d{2}-\d{4}\b"],
            "required_patterns": ["^\\{"],
            "max_length": None,
            "pii_detection": True,
            "must_be_valid_json": True,
        },
    )
    # Old document: the type and its block only.
    e = b.new(
        "guardrails",
        stamps=False,
        name="min length" + suffix,
        guardrail_type="prompt",
        prompt_config={"forbidden_patterns": [], "required_patterns": [], "min_length": 3},
    )
    return [str(x["_id"]) for x in (a, c, d, e)]


def add_knowledge_sources(b: Builder, suffix: str = "") -> list[ObjectId]:
    a = b.new(
        "knowledge_sources",
        "ksource_vector" if not suffix else None,
        name="product docs" + suffix,
        description="Qdrant collection of the docs",
        source_type="vector_db",
        connection_config={
            "url": "http://qdrant:6333",
            "collection": "product_docs",
            "api_key_token_name": "QDRANT_KEY",
        },
        tags=["docs"],
        status="connected",
        last_error=None,
        **b.legacy_extras("knowledge_sources"),
    )
    c = b.new(
        "knowledge_sources",
        "ksource_pgvector" if not suffix else None,
        name="kb (pgvector)" + suffix,
        description="",
        source_type="pgvector",
        connection_config={"dsn_token_name": "PG_DSN", "collection": "kb"},
        tags=[],
        status="error",
        last_error='relation "kb" does not exist',
    )
    d = b.new(
        "knowledge_sources",
        name="kb inline dsn" + suffix,
        source_type="pgvector",
        connection_config={"dsn": "postgresql://reader@kb/kb", "collection": "kb2"},
        status="registered",
    )
    e = b.new(
        "knowledge_sources",
        "ksource_mongo" if not suffix else None,
        stamps=False,
        name="uploads" + suffix,
        source_type="mongo_db",
        connection_config={},
    )
    return [x["_id"] for x in (a, c, d, e)]


def add_gridfs_file(
    b: Builder, data: bytes, name: str, *, md5: bool = False, meta: Doc | None = None
) -> ObjectId:
    """A GridFS file as the existing system's driver stored it (255 KiB chunks)."""
    file_id = b.oid()
    doc: Doc = {
        "_id": file_id,
        "length": Int64(len(data)),
        "chunkSize": _CHUNK,
        "uploadDate": b.when(),
        "filename": name,
    }
    if md5:
        doc["md5"] = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if meta is not None:
        doc["metadata"] = meta
    b.add("fs.files", doc)
    for n, offset in enumerate(range(0, len(data), _CHUNK)):
        b.add(
            "fs.chunks",
            {"_id": b.oid(), "files_id": file_id, "n": n, "data": data[offset : offset + _CHUNK]},
        )
    b.db.files[str(file_id)] = data
    return file_id


def add_knowledge_items(b: Builder, sources: list[ObjectId]) -> None:
    big = bytes((i * 7 + i // 255) % 256 for i in range(3 * _CHUNK + 1234))  # 4 chunks
    big_id = add_gridfs_file(
        b, big, "handbook.pdf", md5=True, meta={"contentType": "application/pdf"}
    )
    empty_id = add_gridfs_file(b, b"", "empty.txt", meta={"contentType": "text/plain"})
    latin = "Ärger über Öl, café".encode("latin-1") + b"\xff\xfe\x00\x80\x81 not utf-8"
    latin_id = add_gridfs_file(b, latin, "legacy-notes.txt")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
    png_id = add_gridfs_file(b, png, "diagram.png", meta={"contentType": "image/png"})
    vector, pgvector, _, mongo = sources
    b.new(
        "knowledge_items",
        "kitem_text",
        source_id=str(vector),
        name="Getting started",
        content_type="text",
        text_content="# Getting started\n" + UNICODE,
        file_id=None,
        file_name=None,
        file_size=None,
        mime_type=None,
        tags=["docs", "intro"],
        metadata={"chunk_index": 0, "chunk_total": Int64(3), "embedding": [0.1, -0.25, 1e-7]},
        **b.legacy_extras("knowledge_items"),
    )
    b.new(
        "knowledge_items",
        "kitem_big_file",
        source_id=mongo,  # reference stored as an ObjectId
        name="Handbook",
        content_type="file",
        file_id=big_id,
        file_name="handbook.pdf",
        file_size=Int64(len(big)),
        mime_type="application/pdf",
        tags=[],
        metadata={},
    )
    b.new(
        "knowledge_items",
        "kitem_empty_file",
        source_id=str(mongo),
        name="empty",
        content_type="file",
        file_id=empty_id,
        file_name="empty.txt",
        file_size=0,
        mime_type="text/plain",
    )
    b.new(
        "knowledge_items",
        "kitem_latin_file",
        stamps=False,
        source_id=str(mongo),
        name="legacy notes",
        content_type="file",
        file_id=str(latin_id),  # a GridFS reference stored as text
        file_name="legacy-notes.txt",
        file_size=len(latin),
    )
    b.new(
        "knowledge_items",
        "kitem_image",
        source_id=str(pgvector),
        name="Architecture diagram 🗺️",
        content_type="image",
        file_id=png_id,
        file_name="diagram.png",
        file_size=len(png),
        mime_type="image/png",
        tags=["diagram"],
        metadata={"width": 640, "height": Int64(480), "dpi": Decimal128("72")},
    )

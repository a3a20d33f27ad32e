"""Files attached to a chat turn (`attachments` of `POST /api/agents/{agent_id}/chat`).

An image goes to the model with the turn's message, as an image part (OpenAI `image_url` data
URL, Anthropic `image` block), when the turn's model is known to accept images (the model
catalog's `vision`); otherwise the turn is refused (422) before anything is stored. Images are
not stored: the session keeps their names on the user's message (`metadata.attachments`).

Any other file becomes knowledge of that session only: an item of the session's own knowledge
source (created on the first attachment, named `chat-<session id>`, its id kept in the session's
`metadata.knowledge_source_id`), searched by that session's turns besides the agent's sources.
Text (`text`) is indexed as it is; other files (`data`, base64: a PDF…) go through the same text
extraction as knowledge uploads.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.domain.models import ChatSession, KnowledgeSource
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.errors import InvalidData
from tbd_agents.services.knowledge import KnowledgeServices
from tbd_agents.storage.protocol import Repositories, eq

#: Image types every vision API takes.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_TEXT_CHARS = 1_000_000
MAX_ATTACHMENTS = 8
#: The tag of knowledge items made from chat attachments.
ATTACHMENT_TAG = "chat-attachment"


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255, description="The file's name.")
    media_type: str = Field(
        default="text/plain", min_length=1, max_length=200, description="The file's MIME type."
    )
    text: str | None = Field(
        default=None, max_length=MAX_TEXT_CHARS, description="A text file's content."
    )
    data: str | None = Field(
        default=None,
        max_length=(MAX_FILE_BYTES * 4) // 3 + 8,
        description="Any other file's bytes, base64 (an image, a PDF).",
    )


@dataclass(slots=True)
class Attachments:
    """A turn's attachments, checked: images for the model, files for the session's knowledge."""

    images: list[dict[str, str]] = field(default_factory=list)
    files: list[AttachmentIn] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.images or self.files)


def _bytes(a: AttachmentIn, limit: int, index: int) -> bytes:
    where = {"field": f"attachments[{index}].data", "name": a.name}
    try:
        raw = base64.b64decode(a.data or "", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidData(
            f"attachment {a.name!r}: data is not valid base64", details=where
        ) from None
    if not raw:
        raise InvalidData(f"attachment {a.name!r} is empty", details=where)
    if len(raw) > limit:
        raise InvalidData(
            f"attachment {a.name!r} has {len(raw):,} bytes; the limit is {limit:,}", details=where
        )
    return raw


def check_attachments(
    items: list[AttachmentIn], model: str | None, catalog: ModelCatalog
) -> Attachments:
    """The turn's attachments sorted into images and files; InvalidData (422) for an image the
    model cannot take, an unsupported image type, a file too big, or a file without content."""
    if len(items) > MAX_ATTACHMENTS:
        raise InvalidData(
            f"{len(items)} attachments; at most {MAX_ATTACHMENTS} per message",
            details={"field": "attachments"},
        )
    out = Attachments()
    for i, a in enumerate(items):
        media = a.media_type.split(";")[0].strip().lower()
        out.names.append(a.name)
        if media.startswith("image/"):
            if media not in IMAGE_TYPES:
                raise InvalidData(
                    f"attachment {a.name!r}: {media} images are not supported; send PNG, JPEG, "
                    "GIF or WebP",
                    details={"field": f"attachments[{i}].media_type"},
                )
            if not model or not catalog.get(model).vision:
                raise InvalidData(
                    f"attachment {a.name!r} is an image, and model {model or '(none)'!r} is not "
                    "known to accept images: choose a vision model for this chat, or remove the "
                    "image",
                    details={"field": "attachments", "model": model},
                )
            _bytes(a, MAX_IMAGE_BYTES, i)
            out.images.append({"media_type": media, "data": a.data or ""})
            continue
        if a.text is None and a.data is None:
            raise InvalidData(
                f"attachment {a.name!r} has no content (give `text` or base64 `data`)",
                details={"field": f"attachments[{i}]"},
            )
        if a.data is not None:
            _bytes(a, MAX_FILE_BYTES, i)
        elif not (a.text or "").strip():
            raise InvalidData(
                f"attachment {a.name!r} is empty", details={"field": f"attachments[{i}].text"}
            )
        out.files.append(a)
    return out


async def session_source(repos: Repositories, session: ChatSession) -> str:
    """The id of the session's own knowledge source (created when it has none)."""
    known = session.metadata.get("knowledge_source_id")
    sources = repos.for_model(KnowledgeSource)
    if isinstance(known, str) and known and await sources.find_one(eq("id", known)) is not None:
        return known
    source = await sources.create(
        KnowledgeSource(
            name=f"chat-{session.id}",
            description="Files attached to a chat session; searched by that session only.",
            tags=[ATTACHMENT_TAG],
            created_by=session.github_user,
        )
    )
    metadata = {**session.metadata, "knowledge_source_id": source.id}
    await repos.chat_sessions.update(session.id, {"metadata": metadata})
    session.metadata = metadata
    return source.id


def session_knowledge(session: ChatSession) -> list[str]:
    """The session's own knowledge source, for its turns to search (empty without one)."""
    known = session.metadata.get("knowledge_source_id")
    return [known] if isinstance(known, str) and known else []


async def ingest_files(
    knowledge: KnowledgeServices, source_id: str, session: ChatSession, files: list[AttachmentIn]
) -> list[dict[str, Any]]:
    """Index each file as an item of the session's source; `[{name, item_id}]`."""
    out = []
    meta = {"session_id": session.id, "attachment": True}
    for a in files:
        if a.data is not None:
            item = await knowledge.ingestion.ingest_file(
                source_id, a.name, base64.b64decode(a.data), content_type=a.media_type,
                tags=[ATTACHMENT_TAG], title=a.name, metadata=meta,
            )  # fmt: skip
        else:
            item = await knowledge.ingestion.ingest_text(
                source_id, a.text or "", title=a.name, tags=[ATTACHMENT_TAG],
                content_type="text/markdown" if a.name.lower().endswith((".md", ".markdown")) else "text/plain",
                metadata=meta,
            )  # fmt: skip
        out.append({"name": a.name, "item_id": item.id})
    return out

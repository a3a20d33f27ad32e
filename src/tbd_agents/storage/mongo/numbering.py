"""Numbers per parent document on MongoDB (`Entity.numbering`: a chat message's `seq`).

`reserve` adds `n` to the parent's counter (and its count of children) with one
`find_one_and_update` `$inc` (atomic on a single document) and returns the new value: the caller
numbers its `n` new documents up to it.

`number_legacy` numbers the documents stored before the field existed (an existing TBD Agents
database, or one this hub wrote before it numbered chat messages). It runs when the store opens,
like the index plan: per parent, the documents without the field, in their original order —
`created_at`, then `_id` (an ObjectId grows with insertion order; a document without
`created_at` takes its ObjectId's time) — get the next numbers of the parent's counter. Two
processes that open at once may both do it: every number is written with `$min`, so the lower
block (the process that reserved first, whose list of documents was read before anyone wrote)
wins on every document, and the order stays the original one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from tbd_agents.domain.models import Entity, Numbering
from tbd_agents.domain.types import utcnow
from tbd_agents.storage.common import VERSION
from tbd_agents.storage.mongo.codec import bson_value, id_forms, id_text

log = logging.getLogger(__name__)

Doc = dict[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _id_filter(record_id: str) -> Doc:
    forms = id_forms(record_id, include_int=True)
    return {"_id": forms[0] if len(forms) == 1 else {"$in": forms}}


async def reserve(
    database: AsyncDatabase[Doc],
    numbering: Numbering,
    parent_id: str,
    n: int,
    *,
    new: bool = True,
) -> int | None:
    """Add `n` to the counter of parent `parent_id` (and to its count of children when they are
    `new`, not stored ones being numbered); the new value (None: no such parent)."""
    parents = database.get_collection(numbering.parent)
    raised = {numbering.counter: n}
    if new and numbering.count is not None:
        raised[numbering.count] = n
    if new:  # the parent changed (its counters): its next version, as any other update
        raised[VERSION] = 1
    doc = await parents.find_one_and_update(
        _id_filter(parent_id),
        {"$inc": raised, "$set": {"updated_at": bson_value(utcnow())}},
        projection={numbering.counter: 1},
        return_document=ReturnDocument.AFTER,
    )
    return None if doc is None else int(doc[numbering.counter])


def _original_order(doc: Doc) -> tuple[datetime, int, str]:
    created = doc.get("created_at")
    raw_id = doc["_id"]
    if not isinstance(created, datetime):
        created = raw_id.generation_time if isinstance(raw_id, ObjectId) else _EPOCH
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    # ObjectIds before other ids of the same time (they sort first in MongoDB too); as hex
    # text of one length, they compare in the order they were made.
    return created, 0 if isinstance(raw_id, ObjectId) else 1, str(raw_id)


async def number_legacy(database: AsyncDatabase[Doc], model: type[Entity]) -> int:
    """Number the documents of `model` that lack their numbered field (module docstring);
    return how many. Documents whose parent is gone are left as they are (and logged)."""
    numbering = model.numbering
    if numbering is None:
        return 0
    children = database.get_collection(model.collection)
    missing = {numbering.field: {"$exists": False}}
    raw_parents = await children.distinct(numbering.parent_field, missing)
    parents = sorted({id_text(p) for p in raw_parents if p is not None})
    numbered = 0
    for parent_id in parents:
        docs = await children.find(
            {numbering.parent_field: {"$in": id_forms(parent_id)}, **missing},
            {"_id": 1, "created_at": 1},
        ).to_list(None)
        if not docs:
            continue  # numbered by another process meanwhile
        docs.sort(key=_original_order)
        last = await reserve(database, numbering, parent_id, len(docs), new=False)
        if last is None:
            log.warning(
                "%d %s of %s %s, which does not exist, are left without %s",
                len(docs), model.collection, numbering.parent, parent_id, numbering.field,
            )  # fmt: skip
            continue
        first = last - len(docs) + 1
        for n, doc in enumerate(docs):
            await children.update_one({"_id": doc["_id"]}, {"$min": {numbering.field: first + n}})
        numbered += len(docs)
    if numbered:
        log.info(
            "numbered %d %s stored before they had %s (in created_at, _id order)",
            numbered, model.collection, numbering.field,
        )  # fmt: skip
    return numbered

"""Build the MongoDB client and store from the settings (called by `storage.factory`)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from tbd_agents.config import Settings, redact_url
from tbd_agents.storage.mongo.repository import MongoStore


def mongo_client(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    """The process's one MongoDB client: `MONGO_URI`, timezone-aware dates (naive BSON dates
    would otherwise be read as local time by careless code), and the application name so the
    server's logs and `currentOp` show who is connected. Connects lazily."""
    return AsyncMongoClient(
        settings.mongo_uri,
        tz_aware=True,
        appname=settings.application_name,
        connect=False,
    )


async def open_mongo_store(settings: Settings) -> MongoStore:
    """A MongoStore on `MONGO_DB_NAME`, opened: the server answered and the indexes exist.

    Raises DatabaseUnreachable (naming the server, never its password) if MongoDB does not answer
    within the client's server-selection timeout (`serverSelectionTimeoutMS` in MONGO_URI, 30 s by
    default); the client is closed in that case.
    """
    client = mongo_client(settings)
    store = MongoStore(
        client.get_database(settings.mongo_db_name),
        client=client,
        target=redact_url(settings.mongo_uri),
    )
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store

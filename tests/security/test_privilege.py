"""Who counts as an admin when a record is used (services/privilege.py), on every backend."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.types import utcnow
from tbd_agents.services.keys import ApiKeys
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.storage.protocol import DocumentStore


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def test_admin_key_makes_an_admin_until_revoked_or_expired(store: DocumentStore) -> None:
    directory = AdminDirectory()
    admin, user, expired = _name("admin"), _name("user"), _name("old")
    async with store.unit_of_work() as repos:
        keys = ApiKeys(repos)
        made = await keys.create(admin, scope=KeyScope.ADMIN)
        await keys.create(user, scope=KeyScope.USER)
        await keys.create(expired, scope=KeyScope.ADMIN, expires_at=utcnow() - timedelta(hours=1))
    async with store.unit_of_work() as repos:
        assert await directory.is_admin(repos, admin)
        assert not await directory.is_admin(repos, user)
        assert not await directory.is_admin(repos, expired)
        assert not await directory.is_admin(repos, _name("nobody"))
        await ApiKeys(repos).revoke(made.record.id, owner=None)
    async with store.unit_of_work() as repos:
        assert not await directory.is_admin(repos, admin)


async def test_ownerless_local_and_github_admins(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        assert await AdminDirectory().is_admin(repos, None)
        assert not await AdminDirectory().is_admin(repos, "local")
        assert await AdminDirectory(local_is_admin=True).is_admin(repos, "local")
        octo = AdminDirectory(github_admins=frozenset({"octocat"}))
        assert await octo.is_admin(repos, "octocat")
        assert not await octo.is_admin(repos, "octodog")

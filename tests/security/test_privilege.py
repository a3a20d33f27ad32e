"""Who counts as an admin when a record is used (services/privilege.py), and whose tokens a
record's `{{token:…}}` references resolve to, on every backend."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.models import Token
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData
from tbd_agents.security.cipher import TokenCipher, generate_fernet_key, parse_key_ring
from tbd_agents.services.keys import ApiKeys
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.tokens import resolve_tree
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


async def test_ownerless_records_resolve_any_token_and_users_only_their_own(
    store: DocumentStore,
) -> None:
    """Tokens were global in the existing TBD Agents, `created_by` only said who typed them in:
    an ownerless (migrated, the operator's) record still gets the token it names. A user's
    record gets only that user's tokens."""
    cipher = TokenCipher(parse_key_ring(generate_fernet_key()))
    alice, bob = _name("alice"), _name("bob")
    async with store.unit_of_work() as repos:
        for name, owner, value in (
            ("GITHUB_PAT", alice, "ghp-alice"),
            ("SHARED", None, "shared-value"),
        ):
            encrypted, version = cipher.encrypt(value)
            await repos.tokens.create(
                Token(name=name, encrypted_value=encrypted, key_version=version, created_by=owner)
            )
    config = {"env": {"GITHUB_TOKEN": "{{token:GITHUB_PAT}}", "OTHER": "{{token:SHARED}}"}}
    async with store.unit_of_work() as repos:
        resolved = await resolve_tree(repos, cipher, None, config)
        assert resolved == {"env": {"GITHUB_TOKEN": "ghp-alice", "OTHER": "shared-value"}}
        assert await resolve_tree(repos, cipher, alice, "{{token:GITHUB_PAT}}") == "ghp-alice"
        with pytest.raises(InvalidData, match="GITHUB_PAT, SHARED"):
            await resolve_tree(repos, cipher, bob, config)

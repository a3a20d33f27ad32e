"""Tokens (named secrets): encrypted at rest, never returned, resolved only at use time.

* `TokenRecords` creates and updates tokens from a plaintext `value` that is encrypted with the
  current key version before it reaches storage; responses carry a fixed mask instead.
* `{{token:NAME}}` in MCP env/headers, custom tool env and provider/knowledge configs is replaced
  by the token's value only when something is about to use it (`resolve_text`, `resolve_tree`).
* Connection strings with a password (`scheme://user:password@host/...`) in a connection config
  are moved into a token and replaced by a `{{token:NAME}}` reference (`extract_connection_secrets`),
  so they are stored encrypted and never echoed back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tbd_agents.domain.models import Token
from tbd_agents.errors import InvalidData
from tbd_agents.logs import register_secrets
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.records import Records
from tbd_agents.storage.protocol import (
    DocumentStore,
    Query,
    Repositories,
    Sort,
    eq,
    in_,
    ne,
)

MASK = "********"
REFERENCE = re.compile(r"\{\{\s*token:([A-Za-z0-9_.\-]{1,200})\s*\}\}")
_URL_WITH_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@")


class TokenRecords(Records[Token]):
    """Token CRUD with encryption of the write-only `value`."""

    def __init__(
        self, repos: Repositories, principal: Principal, cipher: Callable[[], TokenCipher]
    ) -> None:
        super().__init__(repos, principal, Token)
        self._cipher = cipher  # looked up only when a value is encrypted

    @property
    def cipher(self) -> TokenCipher:
        return self._cipher()

    async def create(self, data: Mapping[str, Any]) -> Token:
        values = dict(data)
        value = values.pop("value", None)
        if not isinstance(value, str) or not value:
            raise InvalidData("value: a token needs a non-empty value", details={"field": "value"})
        values["encrypted_value"], values["key_version"] = self.cipher.encrypt(value)
        return await super().create(values)

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> Token:
        values = dict(changes)
        if values.get("value") == MASK:
            # The masked value a client read and sent back unchanged: not a new secret.
            del values["value"]
        if "value" in values:
            value = values.pop("value")
            if not isinstance(value, str) or not value:
                raise InvalidData(
                    "value: a token needs a non-empty value", details={"field": "value"}
                )
            values["encrypted_value"], values["key_version"] = self.cipher.encrypt(value)
        return await super().update(record_id, values, expected_versions=expected_versions)


def is_connection_secret(value: str) -> bool:
    """True for a URL that carries a password (`scheme://user:password@host…`)."""
    if not _URL_WITH_PASSWORD.match(value):
        return False
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False


def _walk(tree: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _walk(value, (*path, str(i)))
    elif isinstance(tree, str):
        yield path, tree


def _replace(tree: Any, path: tuple[str, ...], new: str) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, Mapping):
        return {k: (_replace(v, rest, new) if str(k) == head else v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [(_replace(v, rest, new) if str(i) == head else v) for i, v in enumerate(tree)]
    return tree


def token_name_for(collection: str, record_id: str, path: tuple[str, ...]) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "-", ".".join(path))[:80]
    return f"conn.{collection}.{record_id[:36]}.{slug}"


async def extract_connection_secrets(
    records: TokenRecords, collection: str, record_id: str, config: Any
) -> Any:
    """`config` with every password-bearing connection string moved into a token (one statement
    per secret found); the value is replaced by its `{{token:NAME}}` reference."""
    for path, value in list(_walk(config)):
        if not is_connection_secret(value):
            continue
        name = token_name_for(collection, record_id, path)
        existing = await records.repo.find_one(eq("name", name))
        if existing is None:
            await records.create(
                {"name": name, "value": value, "description": f"from {collection} {record_id}"}
            )
        else:
            await records.update(existing.id, {"value": value})
        config = _replace(config, path, "{{token:" + name + "}}")
    return config


#: A token `extract_connection_secrets` made for one record: `conn.<collection>.<record id>.<path>`.
_RECORD_TOKEN = re.compile(r"^conn\.([A-Za-z0-9_\-]+)\.([^.]{1,36})\.(.*)$")


def _renamer(renamed: Mapping[str, str]) -> Callable[[re.Match[str]], str]:
    def rename(m: re.Match[str]) -> str:
        new = renamed.get(m.group(1))
        return m.group(0) if new is None else "{{token:" + new + "}}"

    return rename


async def own_connection_tokens(
    records: TokenRecords, collection: str, record_id: str, config: Any
) -> Any:
    """`config` with every reference to another record's generated connection token (a config
    copied from that record: a bundle imported as a renamed copy, a GET sent back as a POST)
    replaced by a reference to a copy owned by this record. Each record's generated tokens
    live and die with it, so deleting the original must not take the copy's password along.
    A reference the caller cannot see stays as it is (it fails at use, naming the token)."""
    for path, text in list(_walk(config)):
        foreign = sorted(
            name
            for name in {m.group(1) for m in REFERENCE.finditer(text)}
            if (match := _RECORD_TOKEN.match(name)) is not None
            and (match[1], match[2]) != (collection, record_id[:36])
        )
        renamed: dict[str, str] = {}
        for name in foreign:
            source = await records.repo.find_one(
                eq("name", name), *owner_filters(Token, records.principal)
            )
            if source is None:
                continue
            own = token_name_for(collection, record_id, path)
            if len(foreign) > 1:  # one generated token per place, unless several were pasted
                own = f"{own}.{len(renamed) + 1}"
            value = records.cipher.decrypt(source.encrypted_value)
            existing = await records.repo.find_one(eq("name", own))
            if existing is None:
                await records.create(
                    {"name": own, "value": value, "description": f"from {collection} {record_id}"}
                )
            else:
                await records.update(existing.id, {"value": value})
            renamed[name] = own
        if renamed:
            text = REFERENCE.sub(_renamer(renamed), text)
        config = _replace(config, path, text)
    return config


def referenced_names(tree: Any) -> set[str]:
    """Every token name a `{{token:NAME}}` reference in `tree` mentions."""
    return {m.group(1) for _, text in _walk(tree) for m in REFERENCE.finditer(text)}


async def resolve_tree(
    repos: Repositories, cipher: TokenCipher, owner: str | None, tree: Any
) -> Any:
    """`tree` with each `{{token:NAME}}` replaced by the value of `owner`'s token NAME.

    `owner` None: a record without an owner, i.e. the operator's (only admins see or change
    such records; they come from a migration of a deployment without identities, where every
    token was global). Its references are resolved by name among all tokens (names are unique
    across the installation), as that deployment resolved them: an existing MCP server naming
    `{{token:GITHUB_PAT}}` keeps working although the token records who created it.

    Call this only where the value is about to be used (starting an MCP server, calling a
    provider); never store or return the result. One query whatever the number of references.
    Raises InvalidData naming the missing tokens.
    """
    names = referenced_names(tree)
    if not names:
        return tree
    filters = [in_("name", sorted(names))]
    if owner is not None:
        filters.append(eq("created_by", owner))
    page = await repos.for_model(Token).list(Query(filters=tuple(filters), sort=(Sort("id"),)))
    values = {t.name: cipher.decrypt(t.encrypted_value) for t in page.items}
    # Decrypted for use: from now on no log line of this process may carry them (an upstream
    # can echo them back in what the HTTP client loggers print).
    register_secrets(values.values())
    missing = sorted(names - set(values))
    if missing:
        raise InvalidData(
            f"token(s) {', '.join(missing)} referenced but not found: create them with POST /api/tokens",
            details={"missing": missing},
        )

    def sub(text: str) -> str:
        return REFERENCE.sub(lambda m: values[m.group(1)], text)

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return sub(node)
        return node

    return walk(tree)


async def resolve_text(
    repos: Repositories, cipher: TokenCipher, owner: str | None, text: str
) -> str:
    resolved: str = await resolve_tree(repos, cipher, owner, text)
    return resolved


async def reencrypt_all(store: DocumentStore, cipher: TokenCipher, *, batch_size: int = 500) -> int:
    """Re-encrypt every token not yet under the cipher's current key version; return how many.

    Works in batches, one transaction each, and loops until no token is left on an older version
    (tokens created meanwhile by a server still on the old key are caught by the next pass).
    """
    total = 0
    while True:
        async with store.unit_of_work() as repos:
            repo = repos.for_model(Token)
            page = await repo.list(
                Query(
                    filters=(ne("key_version", cipher.current_version),),
                    sort=(Sort("id"),),
                    limit=batch_size,
                )
            )
            for token in page.items:
                value, version = cipher.reencrypt(token.encrypted_value)
                await repo.update(token.id, {"encrypted_value": value, "key_version": version})
        if not page.items:
            return total
        total += len(page.items)

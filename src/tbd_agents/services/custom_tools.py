"""Custom tool use cases beyond CRUD: a `.py` upload and the env var → token mapping of a
tool.

The source is only ever parsed here (`ast`), never imported or run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from tbd_agents.domain.models import CustomTool, Token
from tbd_agents.errors import InvalidData, UnsupportedFile
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.access import Principal
from tbd_agents.services.catalog import records_for
from tbd_agents.services.tokens import MASK
from tbd_agents.storage.protocol import Query, Repositories, Sort, eq

#: A stored env value that is exactly one token reference (the existing system's full match).
_FULL_REFERENCE = re.compile(r"^\{\{\s*token:([A-Za-z0-9_.\-]{1,200})\s*\}\}$")
MAX_SOURCE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class UploadedTool:
    name: str
    description: str
    source_code: str


def read_upload(
    file_name: str | None, payload: bytes, name: str | None, description: str | None
) -> UploadedTool:
    """The tool a `.py` upload makes: its name is the file's stem unless given, its description
    "Uploaded from <file>" unless given. UnsupportedFile (400) for another kind of file,
    InvalidData (422) for a file that is not UTF-8 text."""
    base = PurePath((file_name or "").replace("\\", "/")).name
    if not base.endswith(".py") or base == ".py":
        raise UnsupportedFile(
            f"only Python files (.py) can be uploaded as custom tools, not {base or 'a file'!r}",
            details={"field": "file"},
        )
    if len(payload) > MAX_SOURCE_BYTES:
        raise InvalidData(
            f"{base} is larger than {MAX_SOURCE_BYTES} bytes", details={"field": "file"}
        )
    try:
        source = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidData(f"{base} is not UTF-8 text", details={"field": "file"}) from None
    return UploadedTool(
        name=name or base[:-3],
        description=description if description is not None else f"Uploaded from {base}",
        source_code=source,
    )


# --- env mapping -----------------------------------------------------------------------------
def token_reference(name: str) -> str:
    return "{{token:" + name + "}}"


def current_token(value: str) -> str | None:
    """The token a stored env value names when it is exactly one `{{token:NAME}}`."""
    found = _FULL_REFERENCE.match(value)
    return found.group(1) if found else None


async def owner_tokens(repos: Repositories, owner: str | None) -> list[Token]:
    """The tokens a tool's `{{token:NAME}}` references resolve among (its owner's), by name."""
    page = await repos.for_model(Token).list(
        Query(filters=(eq("created_by", owner),), sort=(Sort("name"),))
    )
    return list(page.items)


def env_mapping(
    tool: CustomTool, tokens: list[Token], mask: Callable[[Token], str] = lambda _: MASK
) -> dict[str, Any]:
    """The existing `GET /api/custom-tools/{id}/env-mapping` answer; `mask` gives each token's
    `masked_value` (never the secret)."""
    return {
        "tool_id": tool.id,
        "tool_name": tool.name,
        "env_vars": [
            {"env_var": env, "current_token": current_token(value), "template": value}
            for env, value in sorted(tool.env_config.items())
        ],
        "available_tokens": [
            {"id": t.id, "name": t.name, "description": t.description, "masked_value": mask(t)}
            for t in tokens
        ],
    }


async def remap_env(
    repos: Repositories,
    principal: Principal,
    cipher: Callable[[], TokenCipher],
    tool_id: str,
    mapping: Mapping[str, str],
) -> tuple[CustomTool, list[Token]]:
    """Point env vars of the tool at tokens (`{{token:NAME}}`); an empty name clears the value.
    Only env vars the tool already declares, and tokens its owner has, are accepted (422).

    `env_config` is read, changed and written back conditionally on the version read
    (`Records.modify`), so two mappings saved at once both land."""
    service = records_for(CustomTool, repos, principal, cipher)
    tool: CustomTool = await service.get(tool_id)
    tokens = await owner_tokens(repos, tool.created_by)
    names = {t.name for t in tokens}
    missing = sorted({n for n in mapping.values() if n and n not in names})

    def remapped(current: CustomTool) -> dict[str, Any]:
        unknown = sorted(set(mapping) - set(current.env_config))
        if unknown:
            raise InvalidData(
                f"env_var_mapping: {', '.join(unknown)} not in the tool's env_config "
                f"({', '.join(sorted(current.env_config)) or 'none declared'}); add env vars by "
                "updating env_config",
                details={"field": "env_var_mapping", "unknown": unknown},
            )
        if missing:
            raise InvalidData(
                f"env_var_mapping: no token named {', '.join(missing)} (create it under "
                "/api/tokens)",
                details={"field": "env_var_mapping", "missing": missing},
            )
        env = dict(current.env_config)
        env.update({var: token_reference(n) if n else "" for var, n in mapping.items()})
        return {"env_config": env}

    updated: CustomTool = await service.modify(tool.id, remapped)
    return updated, tokens


__all__ = [
    "UploadedTool",
    "current_token",
    "env_mapping",
    "owner_tokens",
    "read_upload",
    "remap_env",
]

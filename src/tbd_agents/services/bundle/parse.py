"""Reading a bundle: the lists of records of a body this server reads, or InvalidData (422)
saying what to fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tbd_agents.errors import InvalidData
from tbd_agents.services.bundle.kinds import (
    BUNDLE_VERSION,
    BY_KEY,
    BY_RESOURCE_TYPE,
    FULL_TYPES,
    LEGACY_FORMAT,
    LEGACY_VERSION,
    READABLE_VERSIONS,
    REFERENCE_KEYS,
    Kind,
)


@dataclass
class ParsedBundle:
    lists: dict[str, list[Any]]
    tokens_required: list[str]


def _refuse(message: str, where: str) -> InvalidData:
    return InvalidData(message, details={"field": where})


def _check_version(body: Mapping[str, Any]) -> None:
    if "version" not in body or body["version"] is None:
        return
    raw = body["version"]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise _refuse('version must be a string such as "1.0"', "version")
    text = f"{float(raw):.1f}" if isinstance(raw, (int, float)) else raw.strip()
    if text not in READABLE_VERSIONS:
        raise _refuse(
            f"unsupported bundle version {raw!r}: this server reads version {BUNDLE_VERSION} "
            "bundles (export the bundle again from a matching TBD Agents)",
            "version",
        )


def _list_of(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body[key]
    if not isinstance(value, list):
        raise _refuse(f"{key} must be a list of records, not {type(value).__name__}", key)
    return value


def _tokens_required(body: Mapping[str, Any]) -> list[str]:
    raw = body.get("tokens_required") or []
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise _refuse("tokens_required must be a list of token names", "tokens_required")
    return sorted(set(raw))


def _parse_legacy(body: Mapping[str, Any]) -> ParsedBundle:
    """A bundle of an earlier version of this hub: `{format, version: 1, resources: {...}}`."""
    version = body.get("version", LEGACY_VERSION)
    if version != LEGACY_VERSION:
        raise _refuse(
            f"unsupported bundle version {version!r} of format {LEGACY_FORMAT!r}: this server "
            f'reads version {LEGACY_VERSION} (and "{BUNDLE_VERSION}" bundles without `format`)',
            "version",
        )
    resources = body.get("resources")
    if not isinstance(resources, Mapping) or not resources:
        raise _refuse("the bundle has no `resources` with records to import", "resources")
    unknown = sorted(set(resources) - set(BY_KEY))
    if unknown:
        raise _refuse(
            f"bundle has unknown collections {unknown}; known: {sorted(BY_KEY)}", "resources"
        )
    lists = {key: _list_of(resources, key) for key in resources}
    return ParsedBundle(lists, _tokens_required(body))


def parse_bundle(body: Any, expected: Kind | None = None) -> ParsedBundle:
    """The lists of records in `body`, by kind key; InvalidData (422) saying what to fix for a
    body that is not a bundle this server reads. `expected`: the kind of a per-resource route."""
    if not isinstance(body, Mapping):
        raise _refuse("a bundle is a JSON object", "body")
    fmt = body.get("format")
    if fmt is not None and fmt != LEGACY_FORMAT:
        raise _refuse(f"unknown bundle format {fmt!r}: expected {LEGACY_FORMAT!r}", "format")
    if "resources" in body:
        if expected is not None:
            raise _refuse(
                f"this is a full bundle: POST it to /api/import (this route takes "
                f'{{"items": [...]}} of {expected.key})',
                "items",
            )
        return _parse_legacy(body)
    _check_version(body)
    kind_name = body.get("resource_type")
    if kind_name is not None and (
        not isinstance(kind_name, str)
        or (kind_name not in FULL_TYPES and kind_name not in BY_RESOURCE_TYPE)
    ):
        raise _refuse(
            f"unknown resource_type {kind_name!r}: expected one of "
            f"{sorted(FULL_TYPES | set(BY_RESOURCE_TYPE))}",
            "resource_type",
        )
    if "items" in body:
        kind = expected
        named = BY_RESOURCE_TYPE.get(kind_name) if isinstance(kind_name, str) else None
        if kind_name in FULL_TYPES:
            raise _refuse("a bundle with resource_type 'bundle' has no `items`", "items")
        if kind is not None and named is not None and named is not kind:
            raise _refuse(
                f"this bundle holds {named.key} (resource_type {kind_name!r}): POST it to "
                f"/api/{named.path}/import",
                "resource_type",
            )
        kind = kind or named
        if kind is None:
            raise _refuse(
                "a bundle of `items` needs its resource_type (agent, skill, workflow, "
                "knowledge_source, ...), or POST it to /api/<resource>/import",
                "resource_type",
            )
        return ParsedBundle({kind.key: _list_of(body, "items")}, _tokens_required(body))
    if expected is not None:
        raise _refuse(
            f'the body has no `items`: this route takes {{"items": [...]}} of {expected.key}',
            "items",
        )
    if kind_name in BY_RESOURCE_TYPE:
        raise _refuse(f"a bundle with resource_type {kind_name!r} needs `items`", "items")
    lists = {key: _list_of(body, key) for key in BY_KEY if key in body}
    if not lists:
        raise _refuse(
            "the body has none of the lists of a bundle (" + ", ".join(REFERENCE_KEYS) + ", …): "
            "nothing to import",
            "body",
        )
    return ParsedBundle(lists, _tokens_required(body))

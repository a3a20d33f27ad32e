"""Optimistic concurrency over HTTP: the `ETag` of a record and the `If-Match` precondition.

A record's entity tag is its `version` in double quotes (`ETag: "3"`), a strong validator of the
stored record: every change raises the version in the same atomic write (`storage.protocol`).
GET of one record, and the answers of POST (create), PUT and PATCH carry it.

`If-Match` on PUT, PATCH and DELETE makes the change conditional (RFC 9110, section 13.1.1):

* absent: no condition, the last writer wins (what clients of the existing API expect);
* `*`: any current version (the record must exist, which every write checks anyway: 404);
* one or more entity tags (`"3"`, `"3", "4"`): the record must be at one of those versions when
  the change is written, else 412 with the current version (and its `ETag`) and nothing changed.

Weak tags (`W/"3"`) are compared by their number, like strong ones. RFC 9110 asks for the strong
comparison in `If-Match`, where a weak tag never matches; we accept them because proxies that
compress answers (nginx's gzip, for one) turn our strong tag into a weak one, and the number
names the stored version exactly either way. A tag that is not a version number matches nothing.
A header that is not a list of quoted tags is refused with 400, saying how to write it.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header

from tbd_agents.errors import TbdError

#: One entity tag of a list, and what may separate it from the next (RFC 9110 `entity-tag`).
_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_VERSION = re.compile(r"0|[1-9][0-9]{0,9}")

IF_MATCH_DOC = (
    'Make the change conditional: the record\'s `ETag` as read (`"3"`), or `*`. When the record '
    "is at another version now, the answer is 412 with the current version and nothing changes. "
    "Without it, the last writer wins."
)

IfMatch = Annotated[str | None, Header(alias="If-Match", description=IF_MATCH_DOC)]


class InvalidPrecondition(TbdError):
    """An `If-Match` header that is not `*` or a list of quoted entity tags."""

    http_status = 400
    code = "invalid_precondition"


def etag(version: int) -> str:
    """The `ETag` header value of a record at `version`."""
    return f'"{version}"'


def expected_versions(header: str | None) -> frozenset[int] | None:
    """The versions an `If-Match` header accepts; None when it sets no condition (absent, empty
    or `*`). InvalidPrecondition for a header that is not a list of quoted entity tags."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text == "*":
        return None
    versions: set[int] = set()
    position = 0
    while position < len(text):
        found = _TAG.match(text, position)
        if found is None or found.end() == position:
            raise InvalidPrecondition(
                f"If-Match {header[:80]!r} is not valid: send the ETag of the record as you read "
                'it, in double quotes (If-Match: "3"), several separated by commas, or *',
                details={"header": "If-Match"},
            )
        if _VERSION.fullmatch(found.group(2)):
            versions.add(int(found.group(2)))
        position = found.end()
    return frozenset(versions)

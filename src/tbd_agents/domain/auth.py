"""API keys: who may call the API, as whom, and with which scope.

Not one of the guide's 15 collections: an extra table (`api_keys`) in PostgreSQL and an extra
collection in MongoDB, stored through the same repository protocol as every other entity.
Only a SHA-256 digest of each key is stored; the key itself is shown once, at creation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tbd_agents.domain.enums import LenientStrEnum
from tbd_agents.domain.models import Entity, Name
from tbd_agents.domain.types import LenientEnum, UtcDatetime


class KeyScope(LenientStrEnum):
    READ_ONLY = "read_only"  # read the owner's records, change nothing
    USER = "user"  # read and change the owner's records
    ADMIN = "admin"  # read and change every record, manage every key


class ApiKey(Entity):
    collection = "api_keys"
    unique_keys = (("key_hash",),)
    owner_field = "owner"

    name: str = Field(default="", max_length=200)
    owner: Name
    scope: Annotated[KeyScope, LenientEnum] = KeyScope.USER
    prefix: str = Field(min_length=1, max_length=32)
    key_hash: str = Field(min_length=64, max_length=64)
    last_used_at: UtcDatetime | None = None
    revoked_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None
    #: Made for the GitHub login `owner` (`keys create --github`): that login may then sign in
    #: with GitHub as the same identity. A login owning only other keys is refused.
    github: bool = False

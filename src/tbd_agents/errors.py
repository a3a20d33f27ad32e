"""One error hierarchy for the whole product.

Every error a user can cause or fix carries a message that says what happened and what to do.
Each class names the HTTP status the API maps it to, so the mapping lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class TbdError(Exception):
    """Base class of every error raised on purpose by TBD Agents."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class ConfigurationError(TbdError):
    """Settings are missing, inconsistent or unsafe; start-up stops."""

    code = "configuration_error"


class NotFound(TbdError):
    http_status = 404
    code = "not_found"

    def __init__(self, entity: str, entity_id: str) -> None:
        super().__init__(f"{entity} {entity_id!r} was not found", details={"id": entity_id})
        self.entity = entity
        self.entity_id = entity_id


class Conflict(TbdError):
    """A unique constraint or a state rule forbids the change."""

    http_status = 409
    code = "conflict"


class DuplicateKey(Conflict):
    code = "duplicate_key"

    def __init__(self, entity: str, fields: Sequence[str], detail: str = "") -> None:
        names = ", ".join(fields) if fields else "a unique key"
        msg = f"{entity} with the same {names} already exists"
        super().__init__(msg + (f" ({detail})" if detail else ""), details={"fields": list(fields)})
        self.entity = entity
        self.fields = list(fields)


class VersionConflict(TbdError):
    """A conditional change (`If-Match`) named a version the record is no longer at: someone
    else changed it since it was read. Nothing was written."""

    http_status = 412
    code = "precondition_failed"

    def __init__(self, entity: str, entity_id: str, current: int, expected: Sequence[int]) -> None:
        named = " or ".join(f'"{v}"' for v in expected) or "none"
        super().__init__(
            f"{entity} {entity_id!r} was changed by someone else: it is at version {current} "
            f'(ETag "{current}"), the request\'s If-Match names {named}. Nothing was changed: '
            "read the record again, apply your change to it and send it with the new ETag",
            details={"id": entity_id, "current_version": current, "expected": list(expected)},
        )
        self.entity = entity
        self.entity_id = entity_id
        self.current = current
        self.expected = list(expected)


class InvalidData(TbdError):
    """A value breaks a rule of the data model (enum, range, reference, required field)."""

    http_status = 422
    code = "invalid_data"


class PayloadTooLarge(TbdError):
    """A request body, upload or extracted text is over a configured limit (named in the message)."""

    http_status = 413
    code = "payload_too_large"


class UnsupportedQuery(TbdError):
    """The query asks for something this backend (or this field) cannot do; nothing is ignored."""

    http_status = 400
    code = "unsupported_query"


class UnsupportedFile(TbdError):
    """An upload of a kind of file the route does not take (e.g. a custom tool that is not .py)."""

    http_status = 400
    code = "unsupported_file"


class StorageError(TbdError):
    """The database is unreachable, not migrated, or refuses an operation for an operator reason."""

    http_status = 503
    code = "storage_unavailable"


class DatabaseUnreachable(StorageError):
    """The database does not answer, or the connection to it was lost: retry later."""

    code = "database_unreachable"
    #: Seconds a client should wait before retrying (the `Retry-After` header of the 503).
    retry_after: ClassVar[int] = 2


class DiskFull(StorageError):
    """The database cannot write: the disk holding its data is full (SQLSTATE 53100)."""

    code = "disk_full"
    retry_after: ClassVar[int] = 10


class SchemaNotReady(StorageError):
    code = "schema_not_ready"


class ExtensionMissing(StorageError):
    code = "extension_missing"


class InsufficientPrivilege(StorageError):
    code = "insufficient_privilege"


class AuthenticationRequired(TbdError):
    """The request carries no valid credentials (missing, unknown, revoked or expired key)."""

    http_status = 401
    code = "authentication_required"


class PermissionDenied(TbdError):
    """The caller is known but its scope does not allow the operation."""

    http_status = 403
    code = "permission_denied"


class TooManyAttempts(TbdError):
    """Too many failed authentications from one client address; retry after `retry_after` s."""

    http_status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class UpstreamError(TbdError):
    """A service we call on the user's behalf (model provider, GitHub, MCP server) failed."""

    http_status = 502
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    """The provider refused the credentials (check the provider's token)."""

    code = "upstream_auth_failed"


class UpstreamRateLimited(UpstreamError):
    """The provider kept answering 429 after the allowed retries."""

    code = "upstream_rate_limited"


class ContextTooLong(UpstreamError):
    """The conversation does not fit the model's context window."""

    code = "context_too_long"


class UpstreamUnreachable(UpstreamError):
    """The provider or server could not be reached, or did not answer in time."""

    code = "upstream_unreachable"


class GuardrailBlocked(TbdError):
    """A guardrail with action `block` refused the input or the output."""

    http_status = 422
    code = "guardrail_blocked"

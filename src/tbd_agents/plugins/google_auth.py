"""Google service-account credentials → an OAuth access token (the JWT bearer grant, RFC 7523).

The service-account JSON (a token's value) carries `client_email`, `private_key` (PEM) and
`token_uri`. We sign a short-lived JWT with RS256 (`cryptography`, no Google SDK), post it to
`token_uri`, and cache the access token per (account, key, scope, token_uri) until shortly before it
expires, so a run making many calls fetches one token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tbd_agents.plugins.base import PluginError

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Refresh this many seconds before the token's stated expiry.
_MARGIN = 60.0


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: str
    token_uri: str
    private_key_id: str | None = None
    project_id: str | None = None

    @classmethod
    def parse(cls, raw: str, env_name: str) -> ServiceAccount:
        """The account in `raw` (the JSON Google issues), or a PluginError naming `env_name`."""
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PluginError(
                f"{env_name} is not JSON ({exc.msg}): store the service account's key file "
                "(the JSON downloaded from Google Cloud) as the token value"
            ) from None
        if not isinstance(data, dict):
            raise PluginError(f"{env_name} must be a JSON object (a service-account key file)")
        missing = [k for k in ("client_email", "private_key") if not data.get(k)]
        if missing:
            raise PluginError(
                f"{env_name} lacks {', '.join(missing)}: it must be a service-account key file "
                '("type": "service_account")'
            )
        return cls(
            client_email=str(data["client_email"]),
            private_key=str(data["private_key"]),
            token_uri=str(data.get("token_uri") or GOOGLE_TOKEN_URI),
            private_key_id=data.get("private_key_id"),
            project_id=data.get("project_id"),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed_assertion(account: ServiceAccount, scope: str, now: float | None = None) -> str:
    """The RS256-signed JWT the token endpoint exchanges for an access token."""
    issued = int(now if now is not None else time.time())
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {
        "iss": account.client_email,
        "scope": scope,
        "aud": account.token_uri,
        "iat": issued,
        "exp": issued + 3600,
    }
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    try:
        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise PluginError(
            f"the service account's private_key is not a usable PEM key: {exc}"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PluginError("the service account's private_key must be an RSA key (RS256)")
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


_cache: dict[tuple[str, str, str, str], tuple[str, float]] = {}


async def access_token(http: httpx.AsyncClient, account: ServiceAccount, scope: str) -> str:
    """A bearer token for `scope`, from the cache or a fresh grant."""
    # Keyed on the key itself too: a token granted to one key is never handed to a caller
    # presenting another key for the same account name.
    fingerprint = hashlib.sha256(account.private_key.encode()).hexdigest()
    key = (account.client_email, scope, account.token_uri, fingerprint)
    cached = _cache.get(key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    response = await http.post(
        account.token_uri,
        data={"grant_type": JWT_GRANT, "assertion": signed_assertion(account, scope)},
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        detail = (
            body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        )
        raise PluginError(
            f"the Google token endpoint refused the service account {account.client_email} "
            f"(HTTP {response.status_code}: {detail or response.text[:200]}); check the key file "
            "and that the account is enabled"
        )
    expires = float(body.get("expires_in", 3600))
    _cache[key] = (str(body["access_token"]), time.monotonic() + max(0.0, expires - _MARGIN))
    return str(body["access_token"])


def clear_cache() -> None:
    """Forget cached tokens (tests; a rotated key)."""
    _cache.clear()


def google_error(response: httpx.Response, service: str) -> PluginError:
    """The PluginError of a Google API error body (`{"error": {"code", "message", "status"}}`)."""
    try:
        err = response.json().get("error", {})
    except (ValueError, AttributeError):
        err = {}
    if isinstance(err, dict) and err.get("message"):
        status = err.get("status") or err.get("code") or response.status_code
        return PluginError(f"{service} error {status}: {err['message']}")
    return PluginError(f"{service} answered HTTP {response.status_code}: {response.text[:200]}")


__all__ = [
    "GOOGLE_TOKEN_URI",
    "ServiceAccount",
    "access_token",
    "clear_cache",
    "google_error",
    "signed_assertion",
]

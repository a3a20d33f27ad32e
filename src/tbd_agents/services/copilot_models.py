"""GitHub Copilot's model listing for `GET /api/models`, through the token exchange.

Which GitHub token asks Copilot, as the existing `/api/models` chose it (the stored token of a
`github_copilot` provider, else the caller's, else the server's), with our limits on the
server's `GITHUB_TOKEN`: it lists models for admins (and everyone when
`DEFAULT_PROVIDER_FOR_USERS=true`), and only for providers of the operator or an admin that send
nothing elsewhere than Copilot — the same rule as runs (engine/builder.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tbd_agents.config import Settings
from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.domain.models import Provider
from tbd_agents.engine.default_provider import DEFAULT_COPILOT_MODEL, DEFAULT_PROVIDER_NAME
from tbd_agents.engine.providers.copilot import copilot_models
from tbd_agents.engine.providers.openai_compat import COPILOT_URL
from tbd_agents.errors import InvalidData
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import OutboundGuard, OutboundPolicy
from tbd_agents.services.access import Principal
from tbd_agents.services.tokens import resolve_text, resolve_tree
from tbd_agents.storage.protocol import Repositories


@dataclass(frozen=True, slots=True)
class CopilotAccess:
    """The server's Copilot settings (COPILOT_TOKEN_URL, COPILOT_API_URL, GITHUB_TOKEN,
    DEFAULT_PROVIDER_FOR_USERS, DEFAULT_PROVIDER_ID, DEFAULT_MODEL)."""

    token_url: str
    api_url: str | None = None
    server_token: str | None = field(default=None, repr=False)
    for_users: bool = False
    default_provider_id: str | None = None
    default_model: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CopilotAccess:
        token = settings.github_token.get_secret_value().strip() if settings.github_token else ""
        return cls(
            token_url=settings.copilot_token_url,
            api_url=settings.copilot_api_url,
            server_token=token or None,
            for_users=settings.default_provider_for_users,
            default_provider_id=settings.default_provider_id,
            default_model=settings.default_model,
        )


async def provider_copilot_models(
    repos: Repositories,
    cipher: TokenCipher,
    outbound: OutboundGuard,
    provider: Provider,
    access: CopilotAccess,
    *,
    caller_token: str | None,
    caller_identity: str | None,
) -> list[dict[str, Any]]:
    """The live model listing of a `github_copilot` provider record."""
    key = None
    if provider.api_key_token_name and provider.auth_type is not AuthType.NONE:
        key = await resolve_text(
            repos, cipher, provider.created_by, "{{token:" + provider.api_key_token_name + "}}"
        )
    base_url = await resolve_text(repos, cipher, provider.created_by, provider.base_url or "")
    if key is None and provider.auth_type is not AuthType.NONE:
        # Another owner's provider may send requests anywhere: never with the caller's token.
        to_copilot = not base_url or base_url.rstrip("/") == COPILOT_URL
        key = caller_token if to_copilot or provider.created_by == caller_identity else None
        if key is None and access.server_token and to_copilot:
            admins = outbound.admins
            if await admins.is_admin(repos, provider.created_by):
                key = access.server_token
    if not key:
        raise InvalidData(
            f"provider {provider.name!r} has no GitHub token to ask Copilot for models: set its "
            "api_key_token_name, sign in with your GitHub token, or set GITHUB_TOKEN"
        )
    headers: dict[str, str] = await resolve_tree(
        repos, cipher, provider.created_by, dict(provider.extra_headers)
    )
    policy = await outbound.policy_for(repos, provider.created_by)
    return await copilot_models(
        key, token_url=access.token_url, api_url=access.api_url, base_url=base_url or None,
        policy=policy, extra_headers=headers,
    )  # fmt: skip


def default_copilot_provider(access: CopilotAccess) -> Provider:
    """The unsaved record standing for the built-in default (engine/default_provider.py)."""
    return Provider(
        name=DEFAULT_PROVIDER_NAME,
        provider_type=ProviderType.GITHUB_COPILOT,
        default_model=access.default_model or DEFAULT_COPILOT_MODEL,
    )


async def default_copilot_models(
    access: CopilotAccess, caller: Principal, caller_token: str | None, policy: OutboundPolicy
) -> tuple[list[dict[str, Any]], str | None]:
    """(models of the default Copilot provider, why there are none). Nothing is listed when
    DEFAULT_PROVIDER_ID replaces Copilot or no GitHub token may be used for this caller."""
    if access.default_provider_id:
        return [], None
    key = caller_token
    if key is None and access.server_token and (caller.is_admin or access.for_users):
        key = access.server_token
    if key is None:
        return [], (
            "no GitHub token for the default GitHub Copilot models: sign in with a GitHub "
            "token, or the operator sets GITHUB_TOKEN (admins; everyone with "
            "DEFAULT_PROVIDER_FOR_USERS=true) or DEFAULT_PROVIDER_ID"
        )
    listed = await copilot_models(
        key, token_url=access.token_url, api_url=access.api_url, base_url=None,
        policy=policy,  # the operator's (COPILOT_TOKEN_URL, COPILOT_API_URL)
    )  # fmt: skip
    return listed, None

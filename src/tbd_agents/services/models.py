"""The models a provider offers: its stored list, or its live `/models` listing."""

from __future__ import annotations

import httpx

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.domain.models import Provider
from tbd_agents.errors import InvalidData, UpstreamError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import OutboundGuard, http_client
from tbd_agents.services.tokens import resolve_text, resolve_tree
from tbd_agents.services.validation import check_headers, check_http_url
from tbd_agents.storage.protocol import Repositories

DEFAULT_BASE_URLS = {
    ProviderType.OPENAI: "https://api.openai.com/v1",
    ProviderType.ANTHROPIC: "https://api.anthropic.com/v1",
}


async def list_provider_models(
    repos: Repositories,
    cipher: TokenCipher,
    outbound: OutboundGuard,
    provider: Provider,
    *,
    refresh: bool,
) -> tuple[list[str], str]:
    """(model ids, "stored" | "provider"). The API key is resolved for this call only; the
    request follows the outbound policy of the provider's owner (security.outbound)."""
    if not refresh:
        return list(provider.models), "stored"
    base = provider.base_url or DEFAULT_BASE_URLS.get(provider.provider_type)
    if not base:
        raise InvalidData(
            "this provider has no base_url to ask for models", details={"field": "base_url"}
        )
    base = await resolve_text(repos, cipher, provider.created_by, base)
    headers: dict[str, str] = await resolve_tree(
        repos, cipher, provider.created_by, dict(provider.extra_headers)
    )
    if provider.api_key_token_name and provider.auth_type is not AuthType.NONE:
        key = await resolve_text(
            repos, cipher, provider.created_by, "{{token:" + provider.api_key_token_name + "}}"
        )
        anthropic = provider.provider_type is ProviderType.ANTHROPIC
        if anthropic and provider.auth_type is not AuthType.BEARER:
            headers["x-api-key"] = key  # x-api-key (the default) and api_key
        else:  # OpenAI-compatible, and Anthropic gateways (bearer)
            headers["Authorization"] = f"Bearer {key}"
        if anthropic:
            headers["anthropic-version"] = "2023-06-01"
    try:  # resolved tokens may hold what HTTP cannot carry: say which field, not a crash
        check_http_url(base, "base_url")
        check_headers(headers, "extra_headers (or the API key token)")
    except ValueError as exc:
        raise InvalidData(f"cannot ask the provider for models: {exc}") from None
    policy = await outbound.policy_for(repos, provider.created_by)
    try:
        async with http_client(policy, f"provider {provider.name!r}", timeout=15.0) as http:
            response = await http.get(base.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the provider could not be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise UpstreamError(f"the provider answered {response.status_code} to GET /models")
    try:
        data = response.json().get("data", [])
        return sorted(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m), "provider"
    except (ValueError, AttributeError):
        raise UpstreamError("the provider's /models answer is not the expected JSON") from None

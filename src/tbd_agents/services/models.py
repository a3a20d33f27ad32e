"""The models a provider offers: its stored list, or its live `/models` listing."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.domain.models import Provider
from tbd_agents.engine.providers.openai_compat import (
    COPILOT_HEADERS,
    COPILOT_URL,
    DEFAULT_AZURE_API_VERSION,
)
from tbd_agents.errors import InvalidData, UpstreamError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import OutboundGuard, http_client
from tbd_agents.services.access import Principal
from tbd_agents.services.copilot_models import CopilotAccess, provider_copilot_models
from tbd_agents.services.tokens import resolve_text, resolve_tree
from tbd_agents.services.validation import check_headers, check_http_url
from tbd_agents.storage.protocol import Repositories

DEFAULT_BASE_URLS = {
    ProviderType.OPENAI: "https://api.openai.com/v1",
    ProviderType.ANTHROPIC: "https://api.anthropic.com/v1",
    ProviderType.GITHUB_COPILOT: COPILOT_URL,
}


async def list_provider_models(
    repos: Repositories,
    cipher: TokenCipher,
    outbound: OutboundGuard,
    provider: Provider,
    *,
    refresh: bool,
    copilot: CopilotAccess | None = None,
    caller: Principal | None = None,
    caller_token: str | None = None,
) -> tuple[list[str], str]:
    """(model ids, "stored" | "provider"). The API key is resolved for this call only; the
    request follows the outbound policy of the provider's owner (security.outbound)."""
    if not refresh:
        return list(provider.models), "stored"
    listed = await fetch_models(
        repos, cipher, outbound, provider, copilot=copilot, caller=caller, caller_token=caller_token
    )
    return sorted(str(m["id"]) for m in listed), "provider"


def _listing_request(provider: Provider, base: str, key: str | None) -> tuple[str, dict[str, str]]:
    """The URL of the provider's model listing and the headers its API wants (extra headers
    are added by the caller)."""
    headers: dict[str, str] = {}
    kind = provider.provider_type
    if kind is ProviderType.AZURE_OPENAI:
        version = provider.azure_api_version or DEFAULT_AZURE_API_VERSION
        url = f"{base.rstrip('/')}/openai/models?api-version={quote(version, safe='')}"
        if key:
            if provider.auth_type is AuthType.BEARER:
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["api-key"] = key
        return url, headers
    url = base.rstrip("/") + "/models"
    if kind is ProviderType.ANTHROPIC:
        url += "?limit=1000"
        headers["anthropic-version"] = "2023-06-01"
        if key and provider.auth_type is not AuthType.BEARER:
            headers["x-api-key"] = key  # x-api-key (the default) and api_key
        elif key:
            headers["Authorization"] = f"Bearer {key}"  # an Anthropic gateway
        return url, headers
    if kind is ProviderType.GITHUB_COPILOT:
        headers.update(COPILOT_HEADERS)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return url, headers


async def fetch_models(
    repos: Repositories,
    cipher: TokenCipher,
    outbound: OutboundGuard,
    provider: Provider,
    *,
    copilot: CopilotAccess | None = None,
    caller: Principal | None = None,
    caller_token: str | None = None,
    api_key: str | None = None,
) -> list[dict[str, Any]]:
    """The provider's live model listing, one JSON object per model as its API gives it (each
    has at least `id`): `GET {base_url}/models` for OpenAI-compatible APIs (openai, custom,
    github_copilot), Anthropic's models API, Azure OpenAI's `/openai/models`. InvalidData when
    the provider has no address to ask, UpstreamError (502) when it fails to answer.

    With `copilot` (the server's Copilot settings), a github_copilot provider's GitHub token
    is first exchanged for a session token (services/copilot_models.py); the caller's own
    GitHub token (`caller_token`) serves providers without a key token. `api_key`: the key to
    use instead of the provider's key token (a provider being set up, not yet stored).

    A refusal of the provider carries its status in `details["upstream_status"]`."""
    if copilot is not None and provider.provider_type is ProviderType.GITHUB_COPILOT:
        return await provider_copilot_models(
            repos, cipher, outbound, provider, copilot, caller_token=caller_token,
            caller_identity=caller.identity if caller is not None else None,
        )  # fmt: skip
    base = provider.base_url or DEFAULT_BASE_URLS.get(provider.provider_type)
    if not base:
        raise InvalidData(
            "this provider has no base_url to ask for models", details={"field": "base_url"}
        )
    base = await resolve_text(repos, cipher, provider.created_by, base)
    key = api_key if provider.auth_type is not AuthType.NONE else None
    if key is None and provider.api_key_token_name and provider.auth_type is not AuthType.NONE:
        key = await resolve_text(
            repos, cipher, provider.created_by, "{{token:" + provider.api_key_token_name + "}}"
        )
    url, headers = _listing_request(provider, base, key)
    extra: dict[str, str] = await resolve_tree(
        repos, cipher, provider.created_by, dict(provider.extra_headers)
    )
    headers = {**extra, **headers}
    try:  # resolved tokens may hold what HTTP cannot carry: say which field, not a crash
        check_http_url(base, "base_url")
        check_headers(headers, "extra_headers (or the API key token)")
    except ValueError as exc:
        raise InvalidData(f"cannot ask the provider for models: {exc}") from None
    policy = await outbound.policy_for(repos, provider.created_by)
    path = url[len(base.rstrip("/")) :].split("?")[0]
    try:
        async with http_client(policy, f"provider {provider.name!r}", timeout=15.0) as http:
            response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the provider could not be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise UpstreamError(
            f"the provider answered {response.status_code} to GET {path}",
            details={"upstream_status": response.status_code},
        )
    try:
        data = response.json().get("data", [])
        return [m for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError):
        raise UpstreamError(f"the provider's {path} answer is not the expected JSON") from None


def model_info(provider: Provider, listed: dict[str, Any]) -> dict[str, Any]:
    """One item of `GET /api/models`: the existing (Copilot SDK `ModelInfo.to_dict()`) fields
    `id`, `name`, `capabilities` {supports {vision}, limits}, `policy` and `billing` when the
    provider gives them, plus which provider offers the model."""
    mid = str(listed["id"])
    caps = listed.get("capabilities")
    supports = dict(caps.get("supports") or {}) if isinstance(caps, dict) else {}
    limits = dict(caps.get("limits") or {}) if isinstance(caps, dict) else {}
    supports.setdefault("vision", False)
    item: dict[str, Any] = {
        "id": mid,
        "name": str(listed.get("name") or listed.get("display_name") or mid),
        "capabilities": {
            **(caps if isinstance(caps, dict) else {}),
            "supports": supports,
            "limits": limits,
        },
    }
    for field in ("policy", "billing"):
        if isinstance(listed.get(field), dict):
            item[field] = listed[field]
    item.update(
        provider_id=provider.id,
        provider_name=provider.name,
        provider_type=provider.provider_type.value,
        is_default=mid == provider.default_model,
    )
    for field in ("owned_by", "created", "created_at", "vendor", "version"):
        if field in listed and field not in item:
            item[field] = listed[field]
    return item


def stored_model_infos(provider: Provider) -> list[dict[str, Any]]:
    """The provider's configured models (its `models` and `default_model`) as model items."""
    ids = list(dict.fromkeys([*provider.models, *filter(None, [provider.default_model])]))
    return [model_info(provider, {"id": m}) for m in ids]

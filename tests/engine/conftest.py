"""Fixtures of the engine tests: the local protocol server and providers pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.providers import ProviderSettings
from tbd_agents.security.outbound import OutboundPolicy
from tests.engine.protocol_server import ProtocolServer

PROVIDER_KINDS = ("openai", "azure_openai", "anthropic", "custom")

#: Fast retries so 429/5xx tests take milliseconds, not seconds.
FAST = EngineConfig(
    model_timeout=10, retry_base_delay=0.01, retry_max_delay=5, mcp_connect_timeout=10
)


@pytest.fixture(scope="session")
def protocol_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(protocol_server: ProtocolServer) -> Iterator[ProtocolServer]:
    protocol_server.reset()
    yield protocol_server
    protocol_server.reset()


#: The local test servers run on 127.0.0.1: these providers are as an admin's records.
ADMIN_OWNED = OutboundPolicy(trusted=True)


def provider_settings(kind: str, url: str, key: str = "sk-test-key") -> ProviderSettings:
    return replace(_provider_settings(kind, url, key), outbound=ADMIN_OWNED)


def _provider_settings(kind: str, url: str, key: str) -> ProviderSettings:
    if kind == "openai":
        return ProviderSettings(
            name="p-openai", provider_type=ProviderType.OPENAI, api_key=key, base_url=f"{url}/v1"
        )
    if kind == "azure_openai":
        return ProviderSettings(
            name="p-azure",
            provider_type=ProviderType.AZURE_OPENAI,
            api_key=key,
            base_url=url,
            azure_deployment="dep1",
            azure_api_version="2024-10-21",
        )
    if kind == "anthropic":
        return ProviderSettings(
            name="p-anthropic", provider_type=ProviderType.ANTHROPIC, api_key=key, base_url=url
        )
    if kind == "anthropic_bearer":
        return ProviderSettings(
            name="p-gateway",
            provider_type=ProviderType.ANTHROPIC,
            api_key=key,
            base_url=url,
            auth_type=AuthType.BEARER,
        )
    if kind == "custom":
        return ProviderSettings(
            name="p-custom",
            provider_type=ProviderType.CUSTOM,
            base_url=f"{url}/v1",
            auth_type=AuthType.NONE,
        )
    if kind == "github_copilot":
        return ProviderSettings(
            name="p-copilot",
            provider_type=ProviderType.GITHUB_COPILOT,
            api_key=key,
            base_url=url + "/v1",
            auth_type=AuthType.BEARER,
        )
    raise ValueError(kind)


@pytest.fixture(params=PROVIDER_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)

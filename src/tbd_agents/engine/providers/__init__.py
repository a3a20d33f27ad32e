"""Model providers behind one interface (`ChatProvider`)."""

from __future__ import annotations

from tbd_agents.domain.enums import ProviderType
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.providers.base import ChatProvider, ProviderSettings, complete


def build_provider(settings: ProviderSettings, config: EngineConfig) -> ChatProvider:
    """The provider implementation for `settings.provider_type`."""
    if settings.provider_type is ProviderType.ANTHROPIC:
        from tbd_agents.engine.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings, config)
    if settings.provider_type is ProviderType.GITHUB_COPILOT:
        from tbd_agents.engine.providers.copilot import CopilotProvider

        return CopilotProvider(settings, config)
    from tbd_agents.engine.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(settings, config)


__all__ = ["ChatProvider", "ProviderSettings", "build_provider", "complete"]

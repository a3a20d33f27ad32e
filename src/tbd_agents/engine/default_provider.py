"""The default model: what an agent without `provider_id` runs on.

The existing TBD Agents ran such agents on GitHub Copilot with the caller's GitHub token (or the
server's GITHUB_TOKEN, which scheduled runs always used). We keep that, in this order:

1. `DEFAULT_PROVIDER_ID`, when the operator set it: that provider record (e.g. an Ollama `custom`
   provider) replaces Copilot as the default.
2. The caller's own GitHub token, when the run was started by a caller who authenticated with
   one (`caller_github_token`): GitHub Copilot billed to the caller.
3. The server's `GITHUB_TOKEN`: GitHub Copilot on the operator's account, for ownerless and
   admins' agents only unless `DEFAULT_PROVIDER_FOR_USERS=true` (the same rule as a
   `github_copilot` provider without a key token, engine/builder.py).

Otherwise the run is refused with the three fixes. The model follows workflow.model →
agent.model → DEFAULT_MODEL → gpt-4.1 (the existing default, which Copilot serves).

The caller's token lives only in memory for the run (a context variable set around the run by
chat and the workflow executor); a queued workflow run carries it encrypted on its task
(runtime/caller_token.py) and the field is cleared when the run ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.domain.models import Agent, Provider
from tbd_agents.engine.config import EngineConfig
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.storage.protocol import Repositories

#: The model of a default-Copilot run when neither the workflow, the agent nor DEFAULT_MODEL
#: names one (the existing DEFAULT_MODEL default).
DEFAULT_COPILOT_MODEL = "gpt-4.1"
#: Name of the built-in default provider in events and errors.
DEFAULT_PROVIDER_NAME = "default (GitHub Copilot)"

_caller_token: ContextVar[str | None] = ContextVar("tbd_caller_github_token", default=None)


@contextmanager
def caller_github_token(token: str | None) -> Iterator[None]:
    """Runs started inside this block may use `token` (the caller's GitHub token) as the
    default Copilot credential."""
    mark = _caller_token.set(token or None)
    try:
        yield
    finally:
        _caller_token.reset(mark)


def _fixes(agent: Agent) -> str:
    return (
        f"agent {agent.name!r} has no provider_id and no default model is available: set the "
        "agent's provider_id (GET /api/providers), or set GITHUB_TOKEN on the server (a GitHub "
        "token with Copilot access), or set DEFAULT_PROVIDER_ID to a provider for agents "
        "without one"
    )


async def default_provider(
    repos: Repositories, agent: Agent, config: EngineConfig, *, operator_ok: bool
) -> tuple[Provider, str | None]:
    """The provider record an agent without provider_id runs on, and the key to use for it
    when that is not the record's own token (None: resolve the record's token as usual).

    `operator_ok`: the agent is ownerless or its owner an admin (may use the operator's
    credentials). The Copilot default is an unsaved, ownerless `Provider`."""
    for_users = config.default_provider_for_users
    owner = agent.created_by
    if config.default_provider_id:
        try:
            record: Provider = await repos.providers.get(config.default_provider_id)
        except NotFound:
            raise InvalidData(
                f"DEFAULT_PROVIDER_ID names provider {config.default_provider_id!r}, which does "
                "not exist: set it to the id of a provider (GET /api/providers) or unset it"
            ) from None
        mine = record.created_by is not None and record.created_by == owner
        if not mine and (record.created_by is not None or not (operator_ok or for_users)):
            raise InvalidData(
                f"agent {agent.name!r} has no provider_id and the default provider "
                f"(DEFAULT_PROVIDER_ID) is the operator's: set the agent's provider_id, or the "
                "operator sets DEFAULT_PROVIDER_FOR_USERS=true"
            )
        key = None
        if (
            record.provider_type is ProviderType.GITHUB_COPILOT
            and not record.api_key_token_name
            and record.auth_type is not AuthType.NONE
            and not record.base_url  # GitHub tokens go to GitHub's endpoints only
        ):
            operator_key = config.copilot_token if operator_ok or for_users else None
            key = _caller_token.get() or operator_key
        return record, key
    copilot = Provider(
        name=DEFAULT_PROVIDER_NAME,
        provider_type=ProviderType.GITHUB_COPILOT,
        auth_type=AuthType.BEARER,
        default_model=config.default_model or DEFAULT_COPILOT_MODEL,
        created_by=None,
    )
    caller = _caller_token.get()
    if caller:
        return copilot, caller
    if config.copilot_token and (operator_ok or for_users):
        return copilot, config.copilot_token
    if config.copilot_token:
        raise InvalidData(
            _fixes(agent) + ". GITHUB_TOKEN serves only ownerless and admins' agents: sign in "
            "with your GitHub token, or the operator sets DEFAULT_PROVIDER_FOR_USERS=true"
        )
    raise InvalidData(_fixes(agent))

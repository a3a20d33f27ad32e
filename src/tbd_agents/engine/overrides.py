"""A workflow's `credential_overrides` applied to the custom tools of its run.

`credential_overrides` maps an environment variable to a token name: for this workflow's runs,
a custom tool that declares the variable in its `env_config` gets the value of the workflow
owner's token instead of its own. A variable no tool of the run declares is not added to any
environment (a tool sees only what it declares) and is reported in the run's warnings. A token
name that does not resolve fails the run before it starts, naming the missing credential, as an
unresolved `{{token:NAME}}` in a tool's own `env_config` does.

Plugin tools are custom-tool records too, but the operator's plugin records serve every user's
agents and run with the operator's outbound trust: on them only a variable that already holds a
credential (a `{{token:…}}` reference) may be overridden. Redirecting a plain setting such as a
plugin's API URL would let a workflow send the plugin, with the operator's trust, to a host of
its owner's choosing; such variables are left alone and reported.
"""

from __future__ import annotations

from typing import Any

from tbd_agents.engine.options import RunOptions
from tbd_agents.errors import InvalidData
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.tokens import referenced_names, resolve_tree
from tbd_agents.storage.protocol import Repositories


def _overridable(tool: Any, var: str) -> bool:
    """Whether `var` of `tool` may take a workflow's credential (see the module docstring)."""
    if var not in tool.env_config:
        return False
    return not tool.is_plugin or bool(referenced_names(tool.env_config[var]))


async def apply_credential_overrides(
    repos: Repositories, cipher: TokenCipher, options: RunOptions, plan: Any
) -> None:
    """Replace, in the env of each of `plan.custom_tools` and `plan.plugin_tools`, the
    declared variables that `options.credential_overrides` names (module docstring)."""
    overrides = dict(options.credential_overrides)
    if not overrides:
        return
    # Custom tools (tool, env) and plugin tools (tool, env, outbound policy): the env dicts
    # are the ones their tools are built with.
    tools = [(t[0], t[1]) for t in [*plan.custom_tools, *getattr(plan, "plugin_tools", [])]]
    applied = {var for tool, _ in tools for var in overrides if _overridable(tool, var)}
    guarded = {
        var for tool, _ in tools for var in overrides
        if var in tool.env_config and not _overridable(tool, var)
    }  # fmt: skip
    unused = sorted(set(overrides) - applied - guarded)
    if unused:
        plan.warnings.append(
            f"credential_overrides {', '.join(unused)}: no custom tool of this run declares "
            "them in its env_config, so they were not applied (a tool only gets the variables "
            "it declares)"
        )
    if guarded:
        plan.warnings.append(
            f"credential_overrides {', '.join(sorted(guarded))}: not applied to plugin tools, "
            "where only variables holding a {{token:…}} credential may be overridden"
        )
    if not applied:
        return
    wanted = {var: "{{token:" + overrides[var] + "}}" for var in sorted(applied)}
    try:
        values: dict[str, str] = await resolve_tree(repos, cipher, options.credential_owner, wanted)
    except InvalidData as exc:
        raise InvalidData(
            f"workflow credential_overrides: {exc.message} (the workflow owner "
            f"{options.credential_owner or '(operator)'} needs these tokens)",
            details=exc.details,
        ) from None
    for tool, env in tools:
        for var in applied:
            if _overridable(tool, var):
                env[var] = values[var]

"""The settings of the existing TBD Agents, and what each one does here (issue #14).

Existing deployments set the variables of the existing `app/config.py` and a few read elsewhere
(telemetry, worker metrics, MCP pass-through). None of them is ignored without a word: `LEGACY`
lists every one with its fate, and `Settings` applies the table when it is built
(`apply_legacy`):

* `WORKS` — a setting of ours with the same name and meaning (`note` says where its default or
  unit differs);
* `RENAMED` — read under the old name and converted onto our setting `target`; setting both names
  to different values stops start-up;
* `REFUSED` — start-up stops with a message that names the variable, why, and what to use
  instead (a feature we implement differently);
* `NO_EFFECT` — accepted, and start-up logs a warning that says it has no effect and why
  (variables the existing system never really used, and observability we do not export);
* `NOT_READ` — not read by the existing application either (Docker Compose, scripts, tests,
  values it set for its own subprocesses): documented, never read.

The table is also the source of the "Settings of the existing TBD Agents" section of
docs/configuration.md (`tbd_agents.tools.settings_reference`).

The vocabulary (`Fate`, `LegacyVariable`) is in `config_legacy_fate`, the table (`LEGACY`) in
`config_legacy_table`; this module applies the table.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from tbd_agents.config_legacy_fate import (
    CHARS_PER_TOKEN,
    Convert,
    Fate,
    LegacyVariable,
    chars_to_tokens,
)
from tbd_agents.config_legacy_table import BY_NAME, INPUT_FIELDS, LEGACY

__all__ = [
    "BY_NAME",
    "CHARS_PER_TOKEN",
    "INPUT_FIELDS",
    "LEGACY",
    "Convert",
    "Fate",
    "LegacyVariable",
    "apply_legacy",
    "chars_to_tokens",
]


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return not (isinstance(value, str) and not value.strip())


def _check_target(settings: Any, variable: LegacyVariable, name: str, value: Any) -> Any:
    """`value` validated as our field `name` would be; ValueError naming both variables."""
    from pydantic import TypeAdapter, ValidationError

    info = type(settings).model_fields[name]
    adapter: TypeAdapter[Any] = TypeAdapter(_annotated(info) if info.metadata else info.annotation)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise ValueError(f"{variable.name} (read as {name.upper()}): {msg}") from None


def _annotated(info: Any) -> Any:
    from typing import Annotated

    return Annotated[(info.annotation, *info.metadata)]


def apply_legacy(settings: Any) -> tuple[list[str], list[str]]:
    """Apply the old variables set in `settings`: returns (problems, warnings). Problems stop
    start-up (each names the variable and the fix); warnings are logged at start-up."""
    problems: list[str] = []
    warnings: list[str] = []
    explicit = settings.model_fields_set
    for variable in LEGACY:
        if variable.fate in (Fate.WORKS, Fate.NOT_READ):
            continue
        value = getattr(settings, variable.field)
        if not _is_set(value):
            continue
        if variable.fate is Fate.REFUSED:
            problems.append(f"{variable.name} is not supported: {variable.note}")
            continue
        if variable.fate is Fate.NO_EFFECT:
            warnings.append(f"{variable.name} has no effect: {variable.note}")
            continue
        try:
            if variable.convert is not None:
                changes = variable.convert(settings, value)
            else:
                assert variable.target is not None
                changes = {variable.target.lower(): value}
            for name, new in changes.items():
                new = _check_target(settings, variable, name, new)
                if name in explicit and getattr(settings, name) != new:
                    raise ValueError(
                        f"{variable.name} and {name.upper()} are both set, to different "
                        f"values: keep {name.upper()} (the name used here) and remove "
                        f"{variable.name}"
                    )
                setattr(settings, name, new)
        except ValueError as exc:
            problems.append(str(exc))
    return problems, warnings

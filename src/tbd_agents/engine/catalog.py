"""Per-model context windows and prices (the `models.toml` table), for compaction and cost."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tbd_agents.errors import ConfigurationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    context_window: int
    max_output_tokens: int
    input_per_mtok: float
    output_per_mtok: float
    known: bool = True
    #: A reasoning model (OpenAI o-series, gpt-5): takes `reasoning_effort` (`reasoning = true`).
    reasoning: bool = False
    #: An Anthropic model with extended thinking (`thinking = true`): the Anthropic provider turns
    #: `reasoning_effort` into a thinking budget (engine/thinking.py).
    thinking: bool = False
    #: GitHub Copilot premium requests one call of this model counts (`premium_multiplier`,
    #: Copilot's per-model multiplier; 1 when the catalog gives none).
    premium_multiplier: float = 1.0
    #: Accepts images in user messages (`vision = true`): chat attachments that are images.
    vision: bool = False

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """US dollars for the given token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


_FIELDS = ("context_window", "max_output_tokens", "input_per_mtok", "output_per_mtok")
#: Optional keys of an entry (booleans).
_FLAGS = ("reasoning", "thinking", "vision")
#: Optional numeric keys of an entry.
_OPTIONAL = ("premium_multiplier",)


def _entry(name: str, raw: Any, source: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"{source}: entry {name!r} must be a table of {', '.join(_FIELDS)}"
        )
    unknown = set(raw) - set(_FIELDS) - set(_FLAGS) - set(_OPTIONAL)
    if unknown:
        raise ConfigurationError(
            f"{source}: entry {name!r} has unknown keys {sorted(unknown)}; allowed: {', '.join(_FIELDS + _FLAGS + _OPTIONAL)}"
        )
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key in _FLAGS:
            if not isinstance(value, bool):
                raise ConfigurationError(f"{source}: {name}.{key} must be true or false")
            out[key] = float(value)
            continue
        if not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f"{source}: {name}.{key} must be a number >= 0")
        out[key] = float(value)
    return out


class ModelCatalog:
    """Looks models up by exact name or by the longest matching `prefix*` entry."""

    def __init__(self, default: dict[str, float], models: dict[str, dict[str, float]]) -> None:
        missing = [f for f in _FIELDS if f not in default]
        if missing:
            raise ConfigurationError(f"model catalog [default] lacks {', '.join(missing)}")
        self._default = default
        self._models = models
        self._warned: set[str] = set()

    @classmethod
    def load(cls, override: Path | None = None) -> ModelCatalog:
        """The built-in table, with the entries of `override` (a TOML file) taking precedence."""
        text = resources.files("tbd_agents.engine").joinpath("models.toml").read_text("utf-8")
        base = tomllib.loads(text)
        default = _entry("default", base["default"], "models.toml")
        models = {k: _entry(k, v, "models.toml") for k, v in base.get("models", {}).items()}
        if override is not None:
            try:
                extra = tomllib.loads(override.read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(
                    f"ENGINE_MODEL_CATALOG={override} cannot be read as TOML ({exc}); fix or unset it"
                ) from None
            if "default" in extra:
                default = {**default, **_entry("default", extra["default"], str(override))}
            for k, v in extra.get("models", {}).items():
                models[k] = {**models.get(k, {}), **_entry(k, v, str(override))}
        return cls(default, models)

    def _match(self, model: str) -> dict[str, float] | None:
        if model in self._models and not model.endswith("*"):
            return self._models[model]
        best: tuple[int, dict[str, float]] | None = None
        for key, entry in self._models.items():
            prefix = key[:-1] if key.endswith("*") else None
            fits = prefix is not None and model.startswith(prefix)
            if fits and prefix is not None and (best is None or len(prefix) > best[0]):
                best = (len(prefix), entry)
        return best[1] if best else None

    def get(self, model: str) -> ModelInfo:
        """Facts of `model`; unknown models get the conservative default (logged once)."""
        entry = self._match(model)
        known = entry is not None
        if entry is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "model %r is not in the model catalog: using a %d-token context window and no "
                    "price; add it to ENGINE_MODEL_CATALOG for correct compaction and cost",
                    model,
                    int(self._default["context_window"]),
                )
            entry = {}
        merged = {**self._default, **entry}
        return ModelInfo(
            name=model,
            context_window=int(merged["context_window"]),
            max_output_tokens=int(merged["max_output_tokens"]),
            input_per_mtok=merged["input_per_mtok"],
            output_per_mtok=merged["output_per_mtok"],
            known=known,
            reasoning=bool(merged.get("reasoning", 0.0)),
            thinking=bool(merged.get("thinking", 0.0)),
            premium_multiplier=merged.get("premium_multiplier", 1.0),
            vision=bool(merged.get("vision", 0.0)),
        )

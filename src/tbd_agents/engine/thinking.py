"""Anthropic extended thinking: a run's `reasoning_effort` as a thinking budget.

Models the catalog marks `thinking = true` get `thinking: {type: "enabled", budget_tokens}` on
the Anthropic provider. Three rules of the Messages API shape this module:

- `max_tokens` must exceed the budget (the thinking is part of the output), so the request asks
  for the budget plus the normal answer allowance, within the model's output limit;
- `temperature` may not be sent with thinking;
- while the model works through tool calls, the assistant turn sent back must start with its
  thinking blocks exactly as received (the signature lets the API check they are unaltered).
  Blocks of turns before the last user message are not needed (the API drops them anyway), so
  only the current turn's are sent.

The thinking text is kept on the assistant `Message.reasoning` (stored with the conversation) and
never streamed as answer text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tbd_agents.engine.messages import Message

log = logging.getLogger(__name__)

#: Thinking budget in tokens per effort (the API's minimum budget is 1024).
BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
MIN_BUDGET = 1024
#: Block types kept on `Message.reasoning` and sent back.
BLOCK_TYPES = ("thinking", "redacted_thinking")
#: Models a temperature was dropped for (logged once each per process).
_TEMPERATURE_DROPPED: set[str] = set()
#: (provider, model) pairs whose thinking effort an OpenAI-compatible provider dropped.
_NOT_SENT: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class ThinkingPlan:
    """What a request with thinking sends: the budget and the raised `max_tokens`."""

    budget_tokens: int
    max_tokens: int

    def param(self) -> dict[str, Any]:
        return {"type": "enabled", "budget_tokens": self.budget_tokens}


def plan(effort: str, answer_tokens: int, model_limit: int | None) -> ThinkingPlan | None:
    """The budget for `effort` and `max_tokens` = budget + `answer_tokens`, capped at the model's
    output limit. When the cap leaves no room, the budget shrinks to half of it; below the API's
    minimum budget, no thinking (None, logged)."""
    budget = BUDGETS.get(effort)
    if budget is None:
        raise ValueError(f"reasoning_effort must be one of {', '.join(BUDGETS)}, not {effort!r}")
    max_tokens = budget + answer_tokens
    if model_limit:
        max_tokens = min(max_tokens, model_limit)
    if budget >= max_tokens:
        budget = max_tokens // 2
    if budget < MIN_BUDGET:
        log.info(
            "extended thinking not sent: max_tokens %d leaves no room for the minimum thinking "
            "budget of %d tokens (raise the model's max_output_tokens in ENGINE_MODEL_CATALOG)",
            max_tokens,
            MIN_BUDGET,
        )
        return None
    return ThinkingPlan(budget_tokens=budget, max_tokens=max_tokens)


def note_dropped_temperature(model: str, temperature: float) -> None:
    """Log (once per model) that the agent's temperature is not sent: the API refuses it with
    thinking enabled."""
    if model in _TEMPERATURE_DROPPED:
        return
    _TEMPERATURE_DROPPED.add(model)
    log.info(
        "temperature %s not sent to %r: Anthropic extended thinking (reasoning_effort) does not "
        "allow a temperature",
        temperature,
        model,
    )


def note_not_sent(provider: str, model: str, effort: str) -> None:
    """Log (once per provider and model) that a thinking model's effort was not sent: only the
    `anthropic` provider speaks extended thinking (Claude through Copilot or a gateway does
    not get it)."""
    if (provider, model) in _NOT_SENT:
        return
    _NOT_SENT.add((provider, model))
    log.info(
        "reasoning_effort %s not sent to %r on provider %r: extended thinking is only sent by "
        "providers of type anthropic",
        effort,
        model,
        provider,
    )


def current_turn_start(messages: list[Message]) -> int:
    """Index of the first message after the last user message: the assistant turns from there on
    are the current one, whose thinking blocks must be sent back."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i + 1
    return 0


def wire_blocks(message: Message) -> list[dict[str, Any]]:
    """The message's thinking blocks as the API takes them back: only the fields it defined."""
    out: list[dict[str, Any]] = []
    for block in message.reasoning:
        kind = block.get("type")
        if kind == "thinking":
            out.append(
                {
                    "type": "thinking",
                    "thinking": str(block.get("thinking", "")),
                    "signature": str(block.get("signature", "")),
                }
            )
        elif kind == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": str(block.get("data", ""))})
    return out


class ThinkingCollector:
    """Assembles the `thinking` / `redacted_thinking` blocks of a streamed answer by index."""

    def __init__(self) -> None:
        self._blocks: dict[int, dict[str, str]] = {}

    def start(self, index: int, block: Any) -> bool:
        """Take a `content_block_start`; True when it opened a thinking block."""
        if block.type == "thinking":
            self._blocks[index] = {
                "type": "thinking",
                "thinking": block.thinking or "",
                "signature": getattr(block, "signature", "") or "",
            }
            return True
        if block.type == "redacted_thinking":
            self._blocks[index] = {"type": "redacted_thinking", "data": block.data or ""}
            return True
        return False

    def delta(self, index: int, delta: Any) -> bool:
        """Take a `content_block_delta`; True when it belonged to a thinking block."""
        block = self._blocks.get(index)
        if delta.type == "thinking_delta" and block is not None:
            block["thinking"] += delta.thinking
            return True
        if delta.type == "signature_delta" and block is not None:
            block["signature"] = block.get("signature", "") + delta.signature
            return True
        return delta.type in ("thinking_delta", "signature_delta")

    def blocks(self) -> list[dict[str, Any]]:
        return [dict(self._blocks[i]) for i in sorted(self._blocks)]

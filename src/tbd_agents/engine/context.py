"""What one run is made of (`RunSpec`, `RunInput`) and the system prompt assembled for it.

The system prompt is built from, in order: the agent's prompt, its skills (selected by id and by
tag when the spec was built), knowledge passages retrieved for the prompt (numbered, with
citations), memories recalled for the prompt, and the output-format policy. Skills, knowledge
and memories each have a token budget; items that do not fit are dropped (lowest ranked first),
a single oversized item is truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tbd_agents.config_legacy import chars_to_tokens
from tbd_agents.domain.enums import OutputFormat
from tbd_agents.engine.catalog import ModelInfo
from tbd_agents.engine.compaction import CompactionPolicy
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails
from tbd_agents.engine.messages import Message
from tbd_agents.engine.options import RunOptions
from tbd_agents.engine.providers.base import ChatProvider
from tbd_agents.engine.sources import KnowledgeSearch, MemoryItem, MemoryStore, Passage
from tbd_agents.engine.tokens import count_text, truncate_to_tokens
from tbd_agents.engine.tools.base import Toolset
from tbd_agents.observability.usage.meter import Meter, NoMeter

FORMAT_POLICY = {
    OutputFormat.TEXT: "Answer in plain text, without Markdown formatting.",
    OutputFormat.MARKDOWN: "Format your final answer in Markdown.",
    OutputFormat.JSON: "Your final answer must be one valid JSON value and nothing else: no prose, "
    "no code fences.",
}


@dataclass(frozen=True, slots=True)
class Budgets:
    skills_tokens: int = 2000
    knowledge_tokens: int = 3000
    memory_tokens: int = 1000
    knowledge_results: int = 5
    memory_results: int = 8
    #: Hard limit on the whole system prompt (None: the section budgets only).
    context_tokens: int | None = None
    #: Clip on each knowledge passage and memory (None: bounded by the section's budget).
    item_tokens: int | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> Budgets:
        """The budgets of the PROMPT_* / *_RETRIEVAL_TOP_K settings (characters → tokens)."""
        cap = config.prompt_max_items

        def capped(n: int) -> int:
            return n if cap is None else min(n, cap)

        def tokens(chars: int | None) -> int | None:
            return None if chars is None else chars_to_tokens(chars)

        return cls(
            skills_tokens=chars_to_tokens(config.prompt_skills_chars),
            knowledge_tokens=chars_to_tokens(config.prompt_knowledge_chars),
            memory_tokens=chars_to_tokens(config.prompt_memory_chars),
            knowledge_results=capped(config.knowledge_results),
            memory_results=capped(config.memory_results),
            context_tokens=tokens(config.prompt_context_chars),
            item_tokens=tokens(config.prompt_item_chars),
        )


@dataclass(frozen=True, slots=True)
class SkillText:
    name: str
    instructions: str
    description: str = ""


@dataclass(slots=True)
class RunSpec:
    """Everything the loop needs about the agent, resolved and ready."""

    provider: ChatProvider
    model: str
    model_info: ModelInfo
    system_prompt: str = "You are a helpful assistant."
    agent_id: str | None = None
    owner: str | None = None
    tools: Toolset = field(default_factory=Toolset)
    guardrails: Guardrails = field(default_factory=lambda: Guardrails([]))
    skills: list[SkillText] = field(default_factory=list)
    knowledge: KnowledgeSearch | None = None
    knowledge_source_ids: list[str] = field(default_factory=list)
    knowledge_tags: list[str] = field(default_factory=list)
    memory: MemoryStore | None = None
    output_format: OutputFormat = OutputFormat.TEXT
    max_turns: int = 10
    temperature: float | None = None
    budgets: Budgets = field(default_factory=Budgets)
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)
    config: EngineConfig = field(default_factory=EngineConfig)
    #: Problems found while building the spec (a skipped MCP server…), reported as events.
    warnings: list[str] = field(default_factory=list)
    #: The workflow's options (engine/options.py); chat turns: the defaults.
    options: RunOptions = field(default_factory=RunOptions)
    #: Budgets before and the usage ledger after each model call (observability/usage/meter.py).
    meter: Meter = field(default_factory=NoMeter)


@dataclass(slots=True)
class RunInput:
    prompt: str
    history: list[Message] = field(default_factory=list)
    #: The structured request checked by `request` guardrails (without one, ours check
    #: {"prompt": prompt}); when given, `prompt` is its JSON (the existing effective prompt).
    request: dict[str, Any] | None = None
    session_id: str | None = None
    run_id: str | None = None
    #: The prompt as the entry point already checked it (`guardrails.guard_prompt`) before
    #: storing it; the loop reports these verdicts instead of checking again. None: the loop
    #: checks `prompt` and `request` itself.
    guarded: GuardedPrompt | None = None
    #: Images sent with the prompt (`Message.images`): a chat turn's image attachments.
    images: list[dict[str, str]] = field(default_factory=list)
    #: Knowledge sources searched besides the agent's: a chat session's attachments.
    knowledge_source_ids: list[str] = field(default_factory=list)
    #: This run's temperature instead of the agent's (the OpenAI-compatible endpoint's
    #: `temperature`); None: the agent's.
    temperature: float | None = None
    #: A cap on each model call's output tokens below the model's own (`max_tokens` of the
    #: OpenAI-compatible endpoint); None: the model's limit.
    max_output_tokens: int | None = None
    #: The tool policy of the run and the decisions it resumes with (engine/approval.py);
    #: None: every call runs.
    approvals: Any = None
    #: The state a run paused for approval resumes from (`RunResult.paused`); None: a new run.
    resume: dict[str, Any] | None = None


def _fit(blocks: list[str], budget: int) -> list[str]:
    if budget <= 0:
        return []
    out: list[str] = []
    used = 0
    for block in blocks:
        cost = count_text(block)
        if used + cost > budget:
            cut = truncate_to_tokens(block, budget) if not out else ""
            if cut:  # at least part of the best item
                out.append(cut)
            break
        out.append(block)
        used += cost
    return out


def _clip(text: str, item_tokens: int | None) -> str:
    return text if item_tokens is None else truncate_to_tokens(text, item_tokens)


#: Characters of a passage kept in its citation (`snippet`: what the dashboard shows).
SNIPPET_CHARS = 2000


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def knowledge_section(
    passages: list[Passage], budget: int, item_tokens: int | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The numbered knowledge section and the citations of the passages that made it in (each
    with the passage's text as the prompt has it, up to SNIPPET_CHARS: `snippet`)."""
    if budget <= 0:
        return "", []
    blocks = [
        f"[{i}] {p.title or p.item_id} (source {p.source_id}, item {p.item_id}, chunk {p.chunk_index})\n{_clip(p.text, item_tokens)}"
        for i, p in enumerate(passages, 1)
    ]
    kept = _fit(blocks, budget)
    if not kept:
        return "", []
    citations = [
        {"ref": i, **p.citation(), "snippet": _snippet(_clip(p.text, item_tokens))}
        for i, p in enumerate(passages[: len(kept)], 1)
    ]
    text = (
        "## Knowledge\nUse these passages when they are relevant and cite them by their "
        "number, like [1].\n\n" + "\n\n".join(kept)
    )
    return text, citations


def assemble_system_prompt(
    spec: RunSpec, passages: list[Passage], memories: list[MemoryItem]
) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt of a run and the citations it carries (`system_prompt_parts`,
    joined by blank lines)."""
    parts, citations = system_prompt_parts(spec, passages, memories)
    return "\n\n".join(text for _, text in parts), citations


def system_prompt_parts(
    spec: RunSpec, passages: list[Passage], memories: list[MemoryItem]
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The sections of a run's system prompt, in order, as (kind, text) — kinds `prompt`,
    `skills`, `policy` (a workflow option's), `knowledge`, `memories`, `format` — and the
    citations it carries. The agent builder's context view shows them one by one.

    With a `context_tokens` budget the whole prompt stays within it: the output-format policy
    is always kept, the agent's prompt is cut to what remains, and each later section gets the
    smaller of its own budget and what is left (so every citation names a passage in the
    prompt)."""
    budgets = spec.budgets
    policy = "## Output format\n" + FORMAT_POLICY[spec.output_format]
    left = None if budgets.context_tokens is None else budgets.context_tokens - count_text(policy)

    def room(own: int, headings: int = 1) -> int:
        if left is None:
            return own
        return min(own, left - _SEPARATOR_TOKENS - headings * _HEADER_TOKENS)

    def take(kind: str, part: str) -> None:
        nonlocal left
        parts.append((kind, part))
        if left is not None:
            left -= count_text(part) + _SEPARATOR_TOKENS

    parts: list[tuple[str, str]] = []
    prompt = spec.system_prompt.strip()
    if left is not None:
        prompt = truncate_to_tokens(prompt, max(0, left - _SEPARATOR_TOKENS))
    if prompt:
        take("prompt", prompt)
    if spec.skills:
        blocks = [f"### {s.name}\n{s.instructions.strip()}" for s in spec.skills]
        kept = _fit(blocks, room(budgets.skills_tokens))
        if kept:
            take("skills", "## Skills\n" + "\n\n".join(kept))
    for section in spec.options.policies():  # caveman / auto_memory (engine/options.py)
        take("policy", section)
    citations: list[dict[str, Any]] = []
    if passages:
        text, citations = knowledge_section(
            passages, room(budgets.knowledge_tokens, headings=4), budgets.item_tokens
        )
        if text:
            take("knowledge", text)
    if memories:
        blocks = [f"- {m.key}: {_clip(str(m.value), budgets.item_tokens)}" for m in memories]
        kept = _fit(blocks, room(budgets.memory_tokens))
        if kept:
            take("memories", "## What you remember\n" + "\n".join(kept))
    parts.append(("format", policy))
    return parts, citations


#: Tokens reserved for the blank line between sections and for a section's heading.
_SEPARATOR_TOKENS = 1
_HEADER_TOKENS = 8

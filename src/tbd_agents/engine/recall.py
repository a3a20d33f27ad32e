"""What a run recalls into its prompt: memories (semantic hits + short-term) and caveman text.

`recall_memories` gives the memories of a run: the semantic hits for the prompt
(MEMORY_RETRIEVAL_TOP_K), then the agent's most recently written memories (STM_MAX_ENTRIES, the
existing "short-term memory": its last N memories of every scope), deduplicated on
(scope, key). The whole list then goes through the prompt's memory budget
(PROMPT_MEMORY_CHAR_BUDGET), which drops what does not fit, lowest ranked first. The existing
system kept the short-term set in Redis; here it is a query on the memories themselves (newest
first), so nothing has to be kept in step.

`compress_context` applies caveman compression (engine/compress.py) to knowledge passages and
memory values when the run's workflow asks for it.
"""

from __future__ import annotations

from dataclasses import replace

from tbd_agents.engine.compress import compress
from tbd_agents.engine.context import RunSpec
from tbd_agents.engine.sources import MemoryItem, Passage


async def recall_memories(spec: RunSpec, prompt: str, session_id: str | None) -> list[MemoryItem]:
    """The memories of a run of `spec` (a spec with a memory store and an agent; see the
    module docstring)."""
    assert spec.memory is not None
    assert spec.agent_id
    found = await spec.memory.search(
        agent_id=spec.agent_id, query=prompt, limit=spec.budgets.memory_results,
        session_id=session_id, owner=spec.owner,
    )  # fmt: skip
    recent_of = getattr(spec.memory, "recent", None)
    stm = spec.config.stm_max_entries
    if stm <= 0 or recent_of is None:
        return found
    seen = {(m.scope, m.key) for m in found}
    out = list(found)
    for item in await recent_of(limit=stm, session_id=session_id):
        if (item.scope, item.key) not in seen:
            seen.add((item.scope, item.key))
            out.append(item)
    return out


def compress_context(
    passages: list[Passage], memories: list[MemoryItem]
) -> tuple[list[Passage], list[MemoryItem]]:
    """The passages and memories with their text compressed (each only where shorter)."""
    return (
        [replace(p, text=compress(p.text)) for p in passages],
        [replace(m, value=compress(str(m.value))) for m in memories],
    )

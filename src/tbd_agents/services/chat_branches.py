"""Branches of a chat session: regenerated answers and edited messages are kept as versions.

A session's messages form a tree. Every message a chat turn stores names the message it follows
in `metadata.parent_id` (null for a first message); a message without the key (stored before branches existed, or through
`POST /api/chat/sessions/{id}/messages`) follows the message numbered before it (`seq`), so a
session that never branched is one straight line, as before.

- Regenerating the last answer stores a new answer following the same user message: the two
  answers are *versions* (siblings) of each other.
- Editing a user message stores the new text following the same message the old one followed:
  the two user messages are versions, each with the answers that came after it.

The *active branch* is the path from the first message to the session's active leaf
(`ChatSession.metadata.active_leaf`, the last message stored by a turn or the leaf of the
version the user switched to; the last message by `seq` when unset). The model receives only the
active branch as history. A session that ever branched has `metadata.branched = true` (until
then the history is read the cheap way: the newest messages by `seq`).

Pure functions over the stored records: no storage access here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import ChatMessage, ChatSession

PARENT = "parent_id"
ACTIVE_LEAF = "active_leaf"
BRANCHED = "branched"
PINNED = "pinned"
STOPPED = "stopped"


def _side(m: ChatMessage) -> str:
    """Versions are compared within one side: a user message's versions are user messages, an
    answer's versions are answers (assistant or tool messages)."""
    return "user" if m.role is MessageRole.USER else "agent"


@dataclass
class Tree:
    messages: list[ChatMessage]  # in `seq` order
    by_id: dict[str, ChatMessage] = field(default_factory=dict)
    parent: dict[str, str | None] = field(default_factory=dict)
    children: dict[str | None, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, messages: Sequence[ChatMessage]) -> Tree:
        ordered = sorted(messages, key=lambda m: m.seq)
        tree = cls(ordered)
        previous: str | None = None
        for m in ordered:
            tree.by_id[m.id] = m
            if isinstance(m.metadata, dict) and PARENT in m.metadata:
                stated = m.metadata[PARENT]  # None: a first message (an edit of the first one)
                parent = stated if isinstance(stated, str) else None
            else:
                parent = previous
            tree.parent[m.id] = parent
            tree.children.setdefault(parent, []).append(m.id)
            previous = m.id
        return tree

    def leaf_under(self, message_id: str) -> str:
        """The newest leaf below the message (following its newest child at every step)."""
        current = message_id
        seen = {current}
        while kids := self.children.get(current):
            current = kids[-1]
            if current in seen:  # a cycle in hand-written metadata: stop there
                break
            seen.add(current)
        return current

    def active_leaf(self, session: ChatSession) -> str | None:
        wanted = session.metadata.get(ACTIVE_LEAF)
        if isinstance(wanted, str) and wanted in self.by_id:
            return self.leaf_under(wanted)
        return self.messages[-1].id if self.messages else None

    def path_to(self, leaf: str | None) -> list[ChatMessage]:
        """The messages from the first to `leaf`, in the conversation's order."""
        out: list[ChatMessage] = []
        seen: set[str] = set()
        current = leaf
        while current is not None and current not in seen and current in self.by_id:
            seen.add(current)
            out.append(self.by_id[current])
            current = self.parent.get(current)
        out.reverse()
        return out

    def active_path(self, session: ChatSession) -> list[ChatMessage]:
        return self.path_to(self.active_leaf(session))

    def versions(self, message_id: str) -> list[str]:
        """The message and its siblings of the same side, oldest first."""
        m = self.by_id[message_id]
        side = _side(m)
        return [
            i
            for i in self.children.get(self.parent.get(message_id), [])
            if _side(self.by_id[i]) == side
        ]

    def versions_json(self, message_id: str) -> dict[str, Any]:
        ids = self.versions(message_id)
        return {"index": ids.index(message_id) + 1, "count": len(ids), "ids": ids}


def last_user_message(path: Sequence[ChatMessage]) -> ChatMessage | None:
    return next((m for m in reversed(path) if m.role is MessageRole.USER), None)

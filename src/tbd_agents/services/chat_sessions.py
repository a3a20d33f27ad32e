"""Chat sessions of one agent as the existing TBD Agents served them, and its "chat workflow".

- `list_sessions`: the caller's sessions of an agent, most recently updated first, `skip` /
  `limit` paged, each `{id, agent_id, title, message_count, created_at, updated_at}`. Ours,
  optional: `q` keeps the sessions whose title or a message's text contains it
  (case-insensitive); `pinned_first` lists pinned sessions first; with either, each session
  also has `pinned` and `last_message_at`.
- `session_detail`: the same plus `messages [{id, seq, role, content, usage, created_at}]` in
  the conversation's order (`seq`: numbered when stored, never by the clock); each message also
  has `parent_id` and `versions {index, count, ids}` (`services/chat_branches.py`). With
  `active`: only the active branch's messages.
- `update_session`: title and `pinned` (kept in `metadata`); `switch_branch`: make the newest
  leaf under a message the active branch. Neither moves the session in the recency order.
- `delete_session`: the session and its messages.
- `start_chat_workflow`: the caller's active `infinite_session` workflow of the agent, or a new
  one titled `Chat: {agent name}` with `max_turns=50`.

A session of another user is reported as not found (our ownership rule; the existing API said
403); a session of another agent of the caller's is a 400, as before.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tbd_agents.domain.enums import WorkflowStatus
from tbd_agents.domain.models import Agent, ChatMessage, ChatSession, Workflow
from tbd_agents.errors import InvalidData
from tbd_agents.services.access import Principal
from tbd_agents.services.chat_branches import ACTIVE_LEAF, PINNED, Tree
from tbd_agents.services.records import Records
from tbd_agents.services.workflow_runs import RunStateRefused
from tbd_agents.storage.protocol import Query, Repositories, Sort, desc, eq, in_

#: `max_turns` of a chat workflow created by `start_chat_workflow`.
CHAT_WORKFLOW_MAX_TURNS = 50


def session_json(session: ChatSession, *, ours: bool = True) -> dict[str, Any]:
    """The existing fields; with `ours`, also `last_message_at` and `pinned` (a plain listing
    keeps the existing row's exact keys)."""
    out: dict[str, Any] = {
        "id": session.id,
        "agent_id": session.agent_id,
        "title": session.title,
        "message_count": session.message_count,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }
    if ours:
        last = session.last_message_at
        out["last_message_at"] = last.isoformat() if last else None
        out["pinned"] = bool(session.metadata.get(PINNED))
    return out


def message_json(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "seq": message.seq,
        "role": message.role.value,
        "content": message.content,
        "usage": message.usage,
        "created_at": message.created_at.isoformat(),
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "metadata": message.metadata,
    }


def ensure_session_of(session: ChatSession, agent_id: str) -> None:
    """400 when the session belongs to another agent."""
    if session.agent_id != agent_id:
        raise RunStateRefused(
            f"chat session {session.id!r} belongs to a different agent ({session.agent_id!r})",
            details={"session_id": session.id, "agent_id": session.agent_id},
        )


async def list_sessions(
    repos: Repositories,
    caller: Principal,
    agent_id: str,
    *,
    skip: int,
    limit: int,
    q: str | None = None,
    pinned_first: bool = False,
) -> list[dict[str, Any]]:
    await Records(repos, caller, Agent).get(agent_id)
    owned = [eq("github_user", caller.identity)]  # the caller's own, admins included
    query = Query(
        filters=(eq("agent_id", agent_id), *owned),
        sort=(desc("updated_at"),),
        limit=skip + limit,
    )
    needle = (q or "").strip().casefold()
    if not needle and not pinned_first:
        page = await repos.chat_sessions.list(query)
        return [session_json(s, ours=False) for s in page.items[skip : skip + limit]]
    # Search and pinning read every session of the caller with the agent (no text index).
    found = [s async for s in repos.chat_sessions.iterate(_unpaged(query))]
    if needle:
        found = await _matching(repos, found, needle)
    if pinned_first:
        found.sort(key=lambda s: not s.metadata.get(PINNED))  # stable: recency within each
    return [session_json(s) for s in found[skip : skip + limit]]


def _unpaged(query: Query) -> Query:
    return Query(filters=query.filters, sort=query.sort)


async def _matching(
    repos: Repositories, sessions: list[ChatSession], needle: str
) -> list[ChatSession]:
    """The sessions whose title or one of whose messages contains `needle` (casefolded)."""
    hits = {s.id for s in sessions if needle in (s.title or "").casefold()}
    rest = [s.id for s in sessions if s.id not in hits]
    for start in range(0, len(rest), 200):
        ids = rest[start : start + 200]
        messages = repos.chat_messages.iterate(Query(filters=(in_("session_id", ids),)))
        async for m in messages:
            if m.session_id not in hits and needle in m.content.casefold():
                hits.add(m.session_id)
    return [s for s in sessions if s.id in hits]


async def _session(
    repos: Repositories, caller: Principal, agent_id: str, session_id: str
) -> ChatSession:
    await Records(repos, caller, Agent).get(agent_id)
    session = await Records(repos, caller, ChatSession).get(session_id)
    ensure_session_of(session, agent_id)
    return session


async def session_detail(
    repos: Repositories,
    caller: Principal,
    agent_id: str,
    session_id: str,
    *,
    active: bool = False,
) -> dict[str, Any]:
    session = await _session(repos, caller, agent_id, session_id)
    return await _detail(repos, session, active=active)


async def _detail(repos: Repositories, session: ChatSession, *, active: bool) -> dict[str, Any]:
    page = await repos.chat_messages.list(
        Query(filters=(eq("session_id", session.id),), sort=(Sort("seq"),))
    )
    tree = Tree.of(page.items)
    shown = tree.active_path(session) if active else tree.messages
    messages = [
        {**message_json(m), "parent_id": tree.parent[m.id], "versions": tree.versions_json(m.id)}
        for m in shown
    ]
    return {**session_json(session), "messages": messages}


async def update_session(
    repos: Repositories,
    caller: Principal,
    agent_id: str,
    session_id: str,
    *,
    title: str | None = None,
    pinned: bool | None = None,
) -> dict[str, Any]:
    """Rename and pin/unpin (`metadata.pinned`), keeping the session's place in the recency
    order (`updated_at` unchanged)."""
    session = await _session(repos, caller, agent_id, session_id)
    changes: dict[str, Any] = {"updated_at": session.updated_at}
    if title is not None:
        changes["title"] = title.strip() or None
    if pinned is not None:
        meta = {k: v for k, v in session.metadata.items() if k != PINNED}
        changes["metadata"] = {**meta, PINNED: True} if pinned else meta
    updated = await repos.chat_sessions.update(session.id, changes)
    return session_json(updated)


async def switch_branch(
    repos: Repositories, caller: Principal, agent_id: str, session_id: str, message_id: str
) -> dict[str, Any]:
    """Make the branch through `message_id` (down to its newest leaf) the active one; the
    session's detail with the active branch."""
    session = await _session(repos, caller, agent_id, session_id)
    page = await repos.chat_messages.list(
        Query(filters=(eq("session_id", session.id),), sort=(Sort("seq"),))
    )
    tree = Tree.of(page.items)
    if message_id not in tree.by_id:
        raise InvalidData(
            f"message {message_id!r} is not in chat session {session_id!r}",
            details={"field": "message_id"},
        )
    meta = {**session.metadata, ACTIVE_LEAF: tree.leaf_under(message_id)}
    session = await repos.chat_sessions.update(
        session.id, {"metadata": meta, "updated_at": session.updated_at}
    )
    return await _detail(repos, session, active=True)


async def delete_session(
    repos: Repositories,
    caller: Principal,
    agent_id: str,
    session_id: str,
    *,
    expected_versions: Collection[int] | None = None,
) -> ChatSession:
    """Delete the session and its messages; the deleted session."""
    await _session(repos, caller, agent_id, session_id)
    sessions = Records(repos, caller, ChatSession)
    deleted: ChatSession = await sessions.delete(session_id, expected_versions=expected_versions)
    return deleted


async def start_chat_workflow(
    repos: Repositories, caller: Principal, agent_id: str
) -> dict[str, str]:
    """`{workflow_id, agent_name, agent_id}` of the caller's chat workflow of the agent."""
    agent = await Records(repos, caller, Agent).get(agent_id)
    found = await repos.workflows.find_one(
        eq("agent_id", agent.id),
        eq("status", WorkflowStatus.ACTIVE),
        eq("infinite_session", True),
        eq("github_user", caller.identity),
    )
    if found is None:
        found = await Records(repos, caller, Workflow).create(
            {
                "agent_id": agent.id,
                "title": f"Chat: {agent.name}",
                "max_turns": CHAT_WORKFLOW_MAX_TURNS,
                "infinite_session": True,
            }
        )
    return {"workflow_id": found.id, "agent_name": agent.name, "agent_id": agent.id}

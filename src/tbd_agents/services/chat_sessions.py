"""Chat sessions of one agent as the existing TBD Agents served them, and its "chat workflow".

- `list_sessions`: the caller's sessions of an agent, most recently updated first, `skip` /
  `limit` paged, each `{id, agent_id, title, message_count, created_at, updated_at}`.
- `session_detail`: the same plus `messages [{id, seq, role, content, usage, created_at}]` in
  the conversation's order (`seq`: numbered when stored, never by the clock).
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
from tbd_agents.services.access import Principal
from tbd_agents.services.records import Records
from tbd_agents.services.workflow_runs import RunStateRefused
from tbd_agents.storage.protocol import Query, Repositories, Sort, desc, eq

#: `max_turns` of a chat workflow created by `start_chat_workflow`.
CHAT_WORKFLOW_MAX_TURNS = 50


def session_json(session: ChatSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "agent_id": session.agent_id,
        "title": session.title,
        "message_count": session.message_count,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }


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
    }


def ensure_session_of(session: ChatSession, agent_id: str) -> None:
    """400 when the session belongs to another agent."""
    if session.agent_id != agent_id:
        raise RunStateRefused(
            f"chat session {session.id!r} belongs to a different agent ({session.agent_id!r})",
            details={"session_id": session.id, "agent_id": session.agent_id},
        )


async def list_sessions(
    repos: Repositories, caller: Principal, agent_id: str, *, skip: int, limit: int
) -> list[dict[str, Any]]:
    await Records(repos, caller, Agent).get(agent_id)
    owned = [eq("github_user", caller.identity)]  # the caller's own, admins included
    query = Query(
        filters=(eq("agent_id", agent_id), *owned),
        sort=(desc("updated_at"),),
        limit=skip + limit,
    )
    page = await repos.chat_sessions.list(query)
    return [session_json(s) for s in page.items[skip : skip + limit]]


async def _session(
    repos: Repositories, caller: Principal, agent_id: str, session_id: str
) -> ChatSession:
    await Records(repos, caller, Agent).get(agent_id)
    session = await Records(repos, caller, ChatSession).get(session_id)
    ensure_session_of(session, agent_id)
    return session


async def session_detail(
    repos: Repositories, caller: Principal, agent_id: str, session_id: str
) -> dict[str, Any]:
    session = await _session(repos, caller, agent_id, session_id)
    page = await repos.chat_messages.list(
        Query(filters=(eq("session_id", session.id),), sort=(Sort("seq"),))
    )
    return {**session_json(session), "messages": [message_json(m) for m in page.items]}


async def delete_session(
    repos: Repositories,
    caller: Principal,
    agent_id: str,
    session_id: str,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    await _session(repos, caller, agent_id, session_id)
    sessions = Records(repos, caller, ChatSession)
    await sessions.delete(session_id, expected_versions=expected_versions)  # and its messages


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

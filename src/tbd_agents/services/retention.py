"""Retention: deleting what is old enough to go, in short batches, on either backend.

Rules (settings in `services/retention_config.py`, `0` turns one off):

- runs (task executions) that ended more than RETENTION_RUN_DAYS ago, and beyond the newest
  RETENTION_RUNS_PER_OWNER finished runs of an owner (the workflow's `github_user`; runs an
  agent delegated to are not counted: they go with the run that started their chain). Only
  finished runs (completed, failed, halted, max_turns_reached): a pending, running or
  awaiting-approval run is never touched. Its events, halts and webhook deliveries go with it
  (foreign-key cascades on PostgreSQL, `runtime_schema.RUNTIME_CHILDREN` on MongoDB), and so
  do the runs its agents delegated to (engine/delegation.py);
- chat sessions whose last activity (`updated_at`) is older than RETENTION_CHAT_DAYS, and beyond
  the RETENTION_CHATS_PER_OWNER most recently active of a user, with their messages and the
  knowledge source holding their attached files;
- chat sessions with more than RETENTION_CHAT_SUMMARY_AFTER_MESSAGES messages: the older ones
  are replaced by one summary written by the agent's model (`ChatSummariser`; a session that
  branched is left whole);
- webhook deliveries (delivered or failed) created more than RETENTION_WEBHOOK_DELIVERY_DAYS ago;
- per-call usage rows older than RETENTION_USAGE_CALL_DAYS, cut at a UTC midnight so that a
  kept day keeps all its calls; the day / month aggregates the totals come from are kept.

Why batches: every batch is its own short transaction of at most RETENTION_BATCH_SIZE records
(a tenth of it for chat sessions, which take their messages along), so a first pass over years
of history neither holds locks for long nor builds one giant transaction; a pass that stops
half-way (process stopped, database lost) leaves nothing half-deleted and the next pass goes on
where it stopped. Every rule selects by a condition, not by a remembered position, so passes
are idempotent. The storage is reused by PostgreSQL once autovacuum has marked the deleted rows'
space free (it is not returned to the operating system; `docs/retention.md`).

`Retention.prune(dry_run=True)` counts what a pass would delete and deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from tbd_agents.domain.approvals import ApprovalStatus, ToolApproval
from tbd_agents.domain.enums import MessageRole, TaskStatus
from tbd_agents.domain.models import ChatMessage, ChatSession, TaskExecution
from tbd_agents.engine.compaction import SUMMARY_PREFIX
from tbd_agents.observability.metrics import RETENTION_DELETED
from tbd_agents.observability.usage.store import UsageStore
from tbd_agents.runtime.store import WebhookStore
from tbd_agents.services.chat_branches import BRANCHED
from tbd_agents.services.retention_config import RetentionSettings
from tbd_agents.storage.protocol import (
    DocumentStore,
    Filter,
    Query,
    Repositories,
    Repository,
    asc,
    desc,
    eq,
    gt,
    in_,
    is_null,
    lt,
)

log = logging.getLogger(__name__)

#: The statuses of a run that is over: the only runs retention deletes.
ENDED = tuple(
    s.value
    for s in (
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.HALTED,
        TaskStatus.MAX_TURNS_REACHED,
    )
)
#: The statuses of an approval that was decided (or expired): deleted with their run.
DECIDED = tuple(s.value for s in ApprovalStatus if s is not ApprovalStatus.PENDING)
KINDS = ("runs", "chat_sessions", "chat_messages", "webhook_deliveries", "usage_calls")

#: Writes the summary of a chat session's older messages (the agent's model); see
#: `engine_chat_summariser`.
ChatSummariser = Callable[[ChatSession, list[ChatMessage]], Awaitable[str]]
#: Deletes the vectors of a deleted knowledge source where they live apart (Qdrant).
ForgetVectors = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The rules of one pass (from the settings; 0 = the rule is off)."""

    run_days: float = 0.0
    runs_per_owner: int = 0
    chat_days: float = 0.0
    chats_per_owner: int = 0
    summary_after_messages: int = 0
    summary_keep_recent: int = 20
    webhook_delivery_days: float = 0.0
    usage_call_days: float = 0.0
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> RetentionPolicy:
        return cls(
            run_days=settings.retention_run_days,
            runs_per_owner=settings.retention_runs_per_owner,
            chat_days=settings.retention_chat_days,
            chats_per_owner=settings.retention_chats_per_owner,
            summary_after_messages=settings.retention_chat_summary_after_messages,
            summary_keep_recent=settings.retention_chat_summary_keep_recent,
            webhook_delivery_days=settings.retention_webhook_delivery_days,
            usage_call_days=settings.retention_usage_call_days,
            batch_size=settings.retention_batch_size,
        )

    @property
    def session_batch(self) -> int:
        return max(1, self.batch_size // 10)


@dataclass(slots=True)
class PruneReport:
    """What one pass deleted (or, `dry_run`, would delete), per kind of record."""

    dry_run: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: Rules that could not run, with the reason (e.g. summaries without a summariser).
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, count: int) -> None:
        self.counts[kind] += count
        if count and not self.dry_run:
            RETENTION_DELETED.labels(kind).inc(count)

    def describe(self) -> str:
        parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.counts.items() if n)
        verb = "would delete" if self.dry_run else "deleted"
        return f"retention {verb} {parts or 'nothing'}"


class Retention:
    """Applies a `RetentionPolicy` to a document store, its webhook deliveries and its usage."""

    def __init__(
        self,
        store: DocumentStore,
        policy: RetentionPolicy,
        *,
        webhooks: WebhookStore | None = None,
        usage: UsageStore | None = None,
        summariser: ChatSummariser | None = None,
        forget_vectors: ForgetVectors | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.webhooks = webhooks
        self.usage = usage
        self.summariser = summariser
        self.forget_vectors = forget_vectors

    async def prune(self, *, dry_run: bool = False, now: datetime | None = None) -> PruneReport:
        """One pass of every rule; what it deleted (`dry_run`: would delete)."""
        now = now or datetime.now(UTC)
        report = PruneReport(dry_run=dry_run)
        p = self.policy
        if p.run_days > 0:
            await self._runs_by_age(now - timedelta(days=p.run_days), report)
        if p.runs_per_owner > 0:
            await self._runs_by_owner(p.runs_per_owner, report)
        if p.chat_days > 0:
            await self._sessions_by_age(now - timedelta(days=p.chat_days), report)
        if p.chats_per_owner > 0:
            await self._sessions_by_owner(p.chats_per_owner, report)
        if p.summary_after_messages > 0:
            await self._summarise_sessions(report)
        if p.webhook_delivery_days > 0:
            await self._deliveries(now - timedelta(days=p.webhook_delivery_days), report)
        if p.usage_call_days > 0:
            await self._usage(_midnight(now - timedelta(days=p.usage_call_days)), report)
        return report

    # --- runs ---------------------------------------------------------------------------------
    async def _runs_by_age(self, cutoff: datetime, report: PruneReport) -> None:
        ended = in_("status", ENDED)
        # Runs recorded without `finished_at` (older data) count from their last update.
        for rule in (
            (ended, lt("finished_at", cutoff)),
            (ended, is_null("finished_at"), lt("updated_at", cutoff)),
        ):
            report.add("runs", await self._drain(TaskExecution, rule, report.dry_run))

    async def _runs_by_owner(self, keep: int, report: PruneReport) -> None:
        owners: dict[str, list[str]] = {}
        async with self.store.unit_of_work(readonly=True) as repos:
            async for wf in repos.workflows.iterate(Query(sort=(asc("created_at"),))):
                owners.setdefault(wf.github_user or "", []).append(wf.id)
        for workflow_ids in owners.values():
            # The runs a user (or a schedule, a webhook) started: the runs their agents
            # delegated to are not counted, and go with them (`_delete_runs`).
            rule = (
                in_("workflow_id", workflow_ids), in_("status", ENDED), is_null("parent_task_id")
            )  # fmt: skip
            deleted = await self._beyond_newest(TaskExecution, rule, "created_at", keep, report)
            report.add("runs", deleted)

    # --- chat sessions ------------------------------------------------------------------------
    async def _sessions_by_age(self, cutoff: datetime, report: PruneReport) -> None:
        rule = (lt("updated_at", cutoff),)
        report.add("chat_sessions", await self._drain(ChatSession, rule, report.dry_run))

    async def _sessions_by_owner(self, keep: int, report: PruneReport) -> None:
        owners: set[str | None] = set()
        async with self.store.unit_of_work(readonly=True) as repos:
            async for session in repos.chat_sessions.iterate(Query()):
                owners.add(session.github_user)
        for owner in owners:
            rule = (eq("github_user", owner) if owner is not None else is_null("github_user"),)
            deleted = await self._beyond_newest(ChatSession, rule, "updated_at", keep, report)
            report.add("chat_sessions", deleted)

    async def _summarise_sessions(self, report: PruneReport) -> None:
        p = self.policy
        long = Query(filters=(gt("message_count", p.summary_after_messages),))
        async with self.store.unit_of_work(readonly=True) as repos:
            # A session that branched is a tree (services/chat_branches.py): cutting it by `seq`
            # could orphan a kept branch, so it is left whole.
            sessions = [
                s async for s in repos.chat_sessions.iterate(long) if not s.metadata.get(BRANCHED)
            ]
        if not sessions:
            return
        if self.summariser is None and not report.dry_run:
            report.skipped.append(
                f"{len(sessions)} chat session(s) have more than {p.summary_after_messages} "
                "messages but no summariser is available in this process: they are summarised "
                "by the API process's upkeep loop"
            )
            return
        for session in sessions:
            try:
                report.add("chat_messages", await self._summarise(session, report.dry_run))
            except Exception as exc:  # one session's model failing must not stop the others
                log.exception("chat session %s could not be summarised", session.id)
                report.skipped.append(f"chat session {session.id} not summarised: {exc}")

    async def _summarise(self, session: ChatSession, dry_run: bool) -> int:
        """Replace the session's messages before its last `summary_keep_recent` by one summary
        message (the last of them rewritten in place: it keeps its place in the order); how
        many messages went."""
        keep = self.policy.summary_keep_recent
        async with self.store.unit_of_work(readonly=True) as repos:
            query = Query(filters=(eq("session_id", session.id),), sort=(asc("seq"),))
            messages: list[ChatMessage] = [m async for m in repos.chat_messages.iterate(query)]
        older = messages[:-keep]
        if len(older) < 2:
            return 0
        if dry_run:
            return len(older) - 1
        assert self.summariser is not None
        text = await self.summariser(session, older)
        into, gone = older[-1], [m.id for m in older[:-1]]
        async with self.store.unit_of_work() as repos:
            await repos.chat_messages.update(
                into.id,
                {
                    "role": MessageRole.ASSISTANT,
                    "content": SUMMARY_PREFIX + text,
                    "tool_calls": [],
                    "tool_call_id": None,
                    "name": None,
                    "metadata": {"summary_of": len(older)},
                },
            )
            deleted = await repos.chat_messages.delete_where(in_("id", gone))
            await repos.chat_sessions.update(session.id, {"message_count": len(messages) - deleted})
        log.info("chat session %s: %d older messages summarised", session.id, len(older))
        return deleted

    async def _delete_runs(self, repos: Repositories, ids: list[str]) -> int:
        """Delete finished runs with the finished runs their agents delegated to (the rest of
        their delegation chains: `root_task_id`) and the decided approvals of all of them; how
        many runs went."""
        chained = Query(filters=(in_("root_task_id", ids), in_("status", ENDED)))
        children = [t.id async for t in repos.task_executions.iterate(chained)]
        every = list(dict.fromkeys([*ids, *children]))
        deleted = await repos.task_executions.delete_where(in_("id", every), in_("status", ENDED))
        await repos.for_model(ToolApproval).delete_where(
            in_("task_id", every), in_("status", DECIDED)
        )
        return deleted

    async def _delete_sessions(self, repos: Repositories, ids: list[str]) -> tuple[int, list[str]]:
        """Delete chat sessions with their messages, delegated runs and attached files'
        knowledge source; how many sessions went, and the deleted sources (their vectors to
        forget)."""
        sources = []
        async for session in repos.chat_sessions.iterate(Query(filters=(in_("id", ids),))):
            known = session.metadata.get("knowledge_source_id")
            if isinstance(known, str) and known:
                sources.append(known)
        deleted = await repos.chat_sessions.delete_where(in_("id", ids))
        # The runs the sessions' turns delegated to go with them (a chat chain never pauses, so
        # they hold no approval).
        await repos.task_executions.delete_where(in_("chat_session_id", ids))
        if sources:
            await repos.knowledge_sources.delete_where(in_("id", sources))
        return deleted, sources

    # --- webhook deliveries and usage ---------------------------------------------------------
    async def _deliveries(self, cutoff: datetime, report: PruneReport) -> None:
        if self.webhooks is not None:
            await self._prune_by_age(
                "webhook_deliveries", self.webhooks.prune_deliveries, cutoff, report
            )

    async def _usage(self, cutoff: datetime, report: PruneReport) -> None:
        if self.usage is not None:
            await self._prune_by_age("usage_calls", self.usage.prune_calls, cutoff, report)

    async def _prune_by_age(
        self, kind: str, prune: Callable[..., Awaitable[int]], cutoff: datetime, report: PruneReport
    ) -> None:
        """Drain a store's `prune(cutoff, batch, dry_run=)` a batch at a time (a dry run
        only counts)."""
        if report.dry_run:
            report.add(kind, await prune(cutoff, 0, dry_run=True))
            return
        while n := await prune(cutoff, self.policy.batch_size):
            report.add(kind, n)
            if n < self.policy.batch_size:
                break

    # --- batches ------------------------------------------------------------------------------
    async def _delete_batch(self, model: type[Any], ids: list[str]) -> int:
        """Delete one batch in one transaction (runs: only if still finished)."""
        sources: list[str] = []
        async with self.store.unit_of_work() as repos:
            if model is ChatSession:
                deleted, sources = await self._delete_sessions(repos, ids)
            elif model is TaskExecution:
                deleted = await self._delete_runs(repos, ids)
            else:
                deleted = await repos.for_model(model).delete_where(
                    in_("id", ids), in_("status", ENDED)
                )
        if self.forget_vectors is not None:  # after the commit: the rows are gone for good
            for source_id in sources:
                await self.forget_vectors(source_id)
        return deleted

    def _batch(self, model: type[Any]) -> int:
        return self.policy.session_batch if model is ChatSession else self.policy.batch_size

    async def _drain(self, model: type[Any], rule: Sequence[Filter], dry_run: bool) -> int:
        """Delete every record matching `rule`, a batch per transaction; how many."""
        if dry_run:
            async with self.store.unit_of_work(readonly=True) as repos:
                return await _repo(repos, model).count(*rule)
        return await self._delete_pages(model, Query(filters=tuple(rule), limit=self._batch(model)))

    async def _delete_pages(self, model: type[Any], query: Query) -> int:
        """Delete the records of `query`'s first page, a transaction per page, until it is empty
        (each deleted page brings the next records to the same place); how many."""
        total = 0
        while True:
            async with self.store.unit_of_work(readonly=True) as repos:
                page = await _repo(repos, model).list(query)
            ids = [r.id for r in page.items]
            if not ids:
                return total
            deleted = await self._delete_batch(model, ids)
            total += deleted
            if page.next_cursor is None or not deleted:  # not deleted: changed meanwhile
                return total

    async def _beyond_newest(
        self,
        model: type[Any],
        rule: Sequence[Filter],
        newest_by: str,
        keep: int,
        report: PruneReport,
    ) -> int:
        """Delete the records matching `rule` except the `keep` newest by `newest_by`."""
        newest = Query(filters=tuple(rule), sort=(desc(newest_by),), limit=keep)
        async with self.store.unit_of_work(readonly=True) as repos:
            repo = _repo(repos, model)
            kept = await repo.list(newest)
            if kept.next_cursor is None:
                return 0
            if report.dry_run:
                return max(0, await repo.count(*rule) - keep)
        # The records after the kept ones in that order; deleting a batch brings the next one
        # right after the same cursor.
        older = Query(filters=tuple(rule), sort=(desc(newest_by),), limit=self._batch(model)).after(
            kept.next_cursor
        )
        return await self._delete_pages(model, older)


def _repo(repos: Repositories, model: type[Any]) -> Repository[Any]:
    return repos.for_model(model)


def _midnight(moment: datetime) -> datetime:
    """The UTC midnight at or before `moment`: usage calls are cut by whole days."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def vector_forgetter(vectors: Any) -> ForgetVectors | None:
    """`ForgetVectors` on a vector store (None without one: on pgvector the chunks are deleted
    with their rows anyway)."""
    if vectors is None:
        return None
    from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, Where

    async def forget(source_id: str) -> None:
        await vectors.delete_where(KNOWLEDGE_CHUNKS.name, Where((eq("source_id", source_id),)))

    return forget


def retention_for(
    settings: RetentionSettings,
    store: DocumentStore,
    *,
    webhooks: WebhookStore | None = None,
    summariser: ChatSummariser | None = None,
    vectors: Any = None,
) -> Retention:
    """The retention of `store` under `settings`: its webhook deliveries (`webhooks`: the run
    store's, else found on the store) and its usage ledger included."""
    from tbd_agents.observability.usage.store import usage_store_or_none
    from tbd_agents.runtime.store import as_run_store

    if webhooks is None:
        webhooks = as_run_store(store).webhooks
    return Retention(
        store,
        RetentionPolicy.from_settings(settings),
        webhooks=webhooks,
        usage=usage_store_or_none(store),
        summariser=summariser,
        forget_vectors=vector_forgetter(vectors),
    )

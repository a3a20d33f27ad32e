"""Tables of the usage ledger and of budgets (`observability/usage`).

- `usage_calls`: one row per model call (turns and compaction summaries), keyed by `call_key`
  (`<run key>:<call number>`), unique, so a retried write cannot count a call twice. Cost is
  NUMERIC: sums are exact, and the usage API's totals equal the sum of the calls.
- `usage_daily`: the calls pre-aggregated per UTC day and (user, agent, workflow, schedule,
  provider, model), kept in the same statement as the call row (`INSERT … ON CONFLICT DO
  UPDATE`), so it always equals the sum of `usage_calls`. Dimensions the call has not (a chat
  turn has no workflow) are stored as '' here: they are part of the primary key.
- `usage_monthly`: the same per calendar month, same statement (long ranges read it).
- `usage_rollup`: the calls summed per dimension alone (`dimension`: user, agent, workflow,
  schedule, provider, model, or `all` with key ''), per day and per month (`grain`), same
  statement: a time series over a year without filters reads a few thousand of these rows
  instead of every usage_daily row of the year.
- `budgets`: spending limits per user, agent, workflow or schedule, checked before each call.

No foreign keys: deleting an agent, workflow or schedule keeps its usage history (the ids stay;
the usage API shows "(deleted)" for a name it cannot resolve any more).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Double,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP

from tbd_agents.storage.postgres.schema import metadata

#: Dollars with 12 digits after the point: a call of 1 token at $0.01 per million is 1e-8.
COST = Numeric(20, 12)
_NOW = text("now()")
BUDGET_SCOPES = ("user", "agent", "workflow", "schedule")
BUDGET_METRICS = ("cost_usd", "tokens")
BUDGET_PERIODS = ("day", "month")
ROLLUP_GRAINS = ("day", "month")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


usage_calls = Table(
    "usage_calls",
    metadata,
    Column("id", Text, primary_key=True, server_default=text("gen_random_uuid()::text")),
    Column("call_key", Text, nullable=False, unique=True),
    Column("at", TIMESTAMP(timezone=True), nullable=False, server_default=_NOW),
    Column("user_id", Text, nullable=True),
    Column("agent_id", Text, nullable=True),
    Column("workflow_id", Text, nullable=True),
    Column("schedule_id", Text, nullable=True),
    Column("task_id", Text, nullable=True),
    Column("session_id", Text, nullable=True),
    Column("provider_id", Text, nullable=True),
    Column("provider_type", Text, nullable=True),
    Column("model", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", COST, nullable=False),
    CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="tokens_range"),
)
Index("idx_usage_calls_at", usage_calls.c.at)
Index("idx_usage_calls_user_id_at", usage_calls.c.user_id, usage_calls.c.at)
Index("idx_usage_calls_task_id", usage_calls.c.task_id)
Index("idx_usage_calls_session_id", usage_calls.c.session_id)

_KEYS = ("user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model")


def _totals(name: str, period: str) -> Table:
    """Calls, tokens and cost per `period` (a date: the day, or a month's first day) and per
    combination of the call's ids; an absent id is '' (the columns are part of the key)."""
    return Table(
        name,
        metadata,
        Column(period, Date, nullable=False),
        *(Column(key, Text, nullable=False, server_default="") for key in _KEYS),
        Column("calls", Integer, nullable=False, server_default=text("0")),
        Column("input_tokens", Numeric(20, 0), nullable=False, server_default=text("0")),
        Column("output_tokens", Numeric(20, 0), nullable=False, server_default=text("0")),
        Column("cost_usd", COST, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint(period, *_KEYS),
    )


usage_daily = _totals("usage_daily", "day")
Index("idx_usage_daily_user_id_day", usage_daily.c.user_id, usage_daily.c.day)
Index("idx_usage_daily_agent_id_day", usage_daily.c.agent_id, usage_daily.c.day)
Index("idx_usage_daily_workflow_id_day", usage_daily.c.workflow_id, usage_daily.c.day)
Index("idx_usage_daily_schedule_id_day", usage_daily.c.schedule_id, usage_daily.c.day)

#: usage_daily summed per calendar month (`month`: its first day), kept by the same statement:
#: a year's summary reads 12 months of rows plus the days of the partial months at its ends.
usage_monthly = _totals("usage_monthly", "month")
Index("idx_usage_monthly_user_id_month", usage_monthly.c.user_id, usage_monthly.c.month)

#: Per dimension alone (one row per (dimension, grain, period, key); `all` / '' for everything),
#: kept by the call's statement. Read when a query filters on no dimension but the one it groups
#: by (the Usage page's admin view); queries filtering across dimensions read usage_daily.
usage_rollup = Table(
    "usage_rollup",
    metadata,
    Column("dimension", Text, nullable=False),
    Column("grain", Text, nullable=False),
    Column("period", Date, nullable=False),
    Column("key", Text, nullable=False, server_default=""),
    Column("calls", BigInteger, nullable=False, server_default=text("0")),
    Column("input_tokens", Numeric(20, 0), nullable=False, server_default=text("0")),
    Column("output_tokens", Numeric(20, 0), nullable=False, server_default=text("0")),
    Column("cost_usd", COST, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("dimension", "grain", "period", "key"),
    CheckConstraint(_in("grain", ROLLUP_GRAINS), name="grain"),
)
#: The series of a few top keys: each key's days in the range.
Index(
    "idx_usage_rollup_dimension_grain_key_period",
    usage_rollup.c.dimension,
    usage_rollup.c.grain,
    usage_rollup.c.key,
    usage_rollup.c.period,
)

budgets = Table(
    "budgets",
    metadata,
    Column("id", Text, primary_key=True, server_default=text("gen_random_uuid()::text")),
    Column("name", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("period", Text, nullable=False),
    Column("limit_value", Numeric(20, 6), nullable=False),
    Column("warn_ratio", Double, nullable=False, server_default=text("0.8")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    #: The period (its first day, ISO) whose warning was sent: a warning once per period.
    Column("warned_period", Text, nullable=True),
    Column("created_by", Text, nullable=True),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=_NOW),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=_NOW),
    CheckConstraint(_in("scope", BUDGET_SCOPES), name="scope"),
    CheckConstraint(_in("metric", BUDGET_METRICS), name="metric"),
    CheckConstraint(_in("period", BUDGET_PERIODS), name="period"),
    CheckConstraint("limit_value > 0", name="limit_positive"),
    CheckConstraint("warn_ratio > 0 AND warn_ratio < 1", name="warn_ratio_range"),
)
Index("idx_budgets_scope_target_id", budgets.c.scope, budgets.c.target_id)

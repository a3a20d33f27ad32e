"""chat_messages.seq and chat_sessions.message_seq: a conversation's order from a counter

A chat session's messages were ordered by `(created_at, id)`. Timestamps are whole milliseconds,
the messages of one turn (assistant, tool results, answer) are written within one, and ids are
random UUIDs: the history came back shuffled, and a provider refuses a tool result that does not
follow its call. Now every message carries `seq`, its place in the session (1, 2, 3…), taken
from the session's counter `message_seq` when it is stored (the repository adds to the counter
in one UPDATE, which holds the session's row lock until the transaction ends).

Existing rows are numbered in `(created_at, id)` order — the only order they have — and each
session's counter is set to its last number. An index on `(session_id, seq)` serves the reads.

Downgrade drops the two columns and the index (the order returns to `created_at`).

Revision ID: 7e2b4d8f1c35
Revises: 6a1f0c3e9b27
Create Date: 2026-12-12 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7e2b4d8f1c35"
down_revision: str | Sequence[str] | None = "6a1f0c3e9b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "idx_chat_messages_session_id_seq"


def upgrade() -> None:
    op.add_column(
        "chat_sessions",
        sa.Column("message_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_chat_sessions_message_seq_range"), "chat_sessions", "message_seq >= 0"
    )
    op.add_column(
        "chat_messages",
        sa.Column("seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(op.f("ck_chat_messages_seq_range"), "chat_messages", "seq >= 0")
    op.execute(
        "UPDATE chat_messages AS m SET seq = o.n FROM ("
        "SELECT id, row_number() OVER (PARTITION BY session_id ORDER BY created_at, id) AS n "
        "FROM chat_messages) AS o WHERE m.id = o.id"
    )
    op.execute(
        "UPDATE chat_sessions AS s SET message_seq = c.last FROM ("
        "SELECT session_id, max(seq) AS last FROM chat_messages GROUP BY session_id) AS c "
        "WHERE s.id = c.session_id"
    )
    op.create_index(INDEX, "chat_messages", ["session_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="chat_messages")
    op.drop_constraint(op.f("ck_chat_messages_seq_range"), "chat_messages", type_="check")
    op.drop_column("chat_messages", "seq")
    op.drop_constraint(op.f("ck_chat_sessions_message_seq_range"), "chat_sessions", type_="check")
    op.drop_column("chat_sessions", "message_seq")

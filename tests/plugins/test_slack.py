"""The slack plugin against a local fake of the Slack Web API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tbd_agents.plugins.slack import SlackPlugin
from tbd_agents.security.outbound import OutboundPolicy
from tests.plugins.conftest import run
from tests.plugins.fakes import SLACK_TOKEN, SlackFake


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake().running() as fake:
        yield fake


def env(fake: SlackFake, token: str = SLACK_TOKEN) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": token, "SLACK_API_URL": f"{fake.url}/api"}


async def test_every_read_operation(slack: SlackFake) -> None:
    e = env(slack)
    res = await run(SlackPlugin(), {"operation": "list_channels", "limit": 10}, e)
    assert not res.is_error, res.content
    assert [c["name"] for c in res.data["channels"]] == ["general", "ops"]
    assert res.data["channels"][0]["topic"] == "company news"
    assert res.data["next_cursor"] == "dGVhbTpDMDYx"
    listed = slack.seen[-1]
    assert (listed.method, listed.path) == ("GET", "/api/conversations.list")
    assert listed.query["limit"] == "10" and "public_channel" in listed.query["types"]
    assert listed.headers["authorization"] == f"Bearer {SLACK_TOKEN}"

    info = await run(SlackPlugin(), {"operation": "get_channel_info", "channel_id": "C2"}, e)
    assert info.data["channel"]["is_private"] is True

    hist = await run(
        SlackPlugin(), {"operation": "get_channel_history", "channel_id": "C1", "limit": 1}, e
    )
    assert [m["text"] for m in hist.data["messages"]] == ["deploy done"]
    assert slack.seen[-1].query == {"channel": "C1", "limit": "1"}

    thread = await run(
        SlackPlugin(),
        {"operation": "get_thread_replies", "channel_id": "C1", "thread_ts": "1700000002.000200"},
        e,
    )
    assert [m["text"] for m in thread.data["messages"]] == ["deploy done", "thanks!"]

    found = await run(SlackPlugin(), {"operation": "search_messages", "query": "deploy"}, e)
    assert found.data["total"] == 1
    assert found.data["matches"][0]["channel"] == "general"
    assert found.data["matches"][0]["permalink"].endswith("p1700000002.000200")


async def test_write_operations_send_json_bodies(slack: SlackFake) -> None:
    e = env(slack)
    sent = await run(
        SlackPlugin(), {"operation": "send_message", "channel_id": "C1", "text": "hi team"}, e
    )
    assert sent.data["ok"] is True and sent.data["channel"] == "C1"
    post = slack.seen[-1]
    assert (post.method, post.path) == ("POST", "/api/chat.postMessage")
    assert post.headers["content-type"].startswith("application/json")
    assert post.body == {"channel": "C1", "text": "hi team"}

    await run(
        SlackPlugin(),
        {"operation": "reply_in_thread", "channel_id": "C1", "text": "on it",
         "thread_ts": "1700000002.000200"},
        e,
    )  # fmt: skip
    assert slack.posted[-1] == {"channel": "C1", "text": "on it", "thread_ts": "1700000002.000200"}

    react = {"operation": "add_reaction", "channel_id": "C1", "message_ts": "1700000001.000100",
             "emoji": ":tada:"}  # fmt: skip
    assert (await run(SlackPlugin(), react, e)).data == {"ok": True}
    assert slack.reactions == [{"channel": "C1", "timestamp": "1700000001.000100", "name": "tada"}]
    again = await run(SlackPlugin(), react, e)
    assert again.is_error and "already_reacted" in again.content


async def test_slack_errors_become_clear_tool_errors(slack: SlackFake) -> None:
    bad = await run(SlackPlugin(), {"operation": "list_channels"}, env(slack, "xoxb-wrong"))
    assert bad.is_error
    assert (
        "conversations.list failed: invalid_auth" in bad.content
        and "SLACK_BOT_TOKEN" in bad.content
    )

    missing = await run(
        SlackPlugin(), {"operation": "get_channel_history", "channel_id": "C404"}, env(slack)
    )
    assert missing.is_error and "channel_not_found" in missing.content

    no_arg = await run(SlackPlugin(), {"operation": "send_message", "channel_id": "C1"}, env(slack))
    assert no_arg.is_error and "'text' is required for operation 'send_message'" in no_arg.content

    bad_op = await run(SlackPlugin(), {"operation": "delete_everything"}, env(slack))
    assert bad_op.is_error and "invalid arguments" in bad_op.content

    no_token = await run(SlackPlugin(), {"operation": "list_channels"}, {})
    assert no_token.is_error and "SLACK_BOT_TOKEN is not set" in no_token.content
    assert "{{token:slack-bot-token}}" in no_token.content
    assert len(slack.posted) == 0


async def test_the_outbound_policy_applies(slack: SlackFake) -> None:
    """Without the allow-list entry a user's record may not reach loopback: the request never
    leaves, and the model reads why."""
    res = await run(SlackPlugin(), {"operation": "list_channels"}, env(slack), OutboundPolicy())
    assert res.is_error and "OUTBOUND_ALLOWED_HOSTS" in res.content
    assert slack.seen == []
    assert json.loads(
        (await run(SlackPlugin(), {"operation": "list_channels"}, env(slack))).content
    )

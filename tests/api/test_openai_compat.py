"""The OpenAI-compatible endpoint (`/v1`) with the official `openai` client against the real API
on a socket: agents as models, completions streamed and not, usage, the agent's own tools run on
the server, guardrails, and errors in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tbd_agents.domain.auth import KeyScope
from tests.api.live_agents import LiveApi, User, protocol_server, running_api, user  # noqa: F401
from tests.engine.protocol_server import Turn


@pytest.fixture(scope="module")
def api(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with running_api(pg18_server, Path(tmp_path_factory.mktemp("v1")), "openai") as live:
        yield live


def sdk(api: LiveApi, key: str) -> openai.OpenAI:
    # No retries: a test sees the first answer (a 5xx would otherwise run the agent again).
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_models_are_the_callers_agents(api: LiveApi, user: User) -> None:
    mine = user.agent(description="Answers questions about orders.")
    other = User(api, user.protocol)
    theirs = other.agent()
    client = sdk(api, user.key)

    listed = client.models.list()
    ids = [m.id for m in listed.data]
    assert mine["id"] in ids and theirs["id"] not in ids
    model = next(m for m in listed.data if m.id == mine["id"])
    assert model.object == "model" and model.owned_by == mine["created_by"]
    assert isinstance(model.created, int) and model.created > 0

    assert client.models.retrieve(mine["id"]).id == mine["id"]
    assert client.models.retrieve(mine["name"]).id == mine["id"]  # its unique name
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve(theirs["id"])
    assert missing.value.code == "model_not_found"
    other.close()


def test_a_completion_is_the_agents_answer(api: LiveApi, user: User) -> None:
    agent = user.agent(system_prompt="You are the order desk.")
    user.protocol.script(Turn(text="Order 7 shipped yesterday.", usage=(40, 6)))
    client = sdk(api, user.key)

    done = client.chat.completions.create(
        model=agent["id"],
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Where is order 7?"},
        ],
        temperature=0.3,
        max_tokens=50,
    )
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert done.model == agent["id"]
    choice = done.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Order 7 shipped yesterday."
    assert choice.finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (40, 6)
    assert done.usage.total_tokens == 46

    sent = user.protocol.requests[-1].body
    roles = [m["role"] for m in sent["messages"]]
    assert roles[-3:] == ["user", "assistant", "user"]
    system_text = " ".join(str(m["content"]) for m in sent["messages"] if m["role"] == "system")
    # The client's system message comes after the agent's own system prompt.
    assert system_text.index("You are the order desk.") < system_text.index("one sentence")
    assert sent["messages"][-1]["content"] == "Where is order 7?"
    assert sent["temperature"] == 0.3
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 50


def test_the_model_may_be_named_by_the_agents_name(api: LiveApi, user: User) -> None:
    agent = user.agent()
    user.protocol.script(Turn(text="By name."))
    done = sdk(api, user.key).chat.completions.create(
        model=agent["name"], messages=[{"role": "user", "content": "hello"}]
    )
    assert done.choices[0].message.content == "By name."


def test_a_streamed_completion_with_usage(api: LiveApi, user: User) -> None:
    agent = user.agent()
    user.protocol.script(Turn(text="Streaming along nicely.", chunk_chars=4, usage=(30, 5)))
    stream = sdk(api, user.key).chat.completions.create(
        model=agent["id"],
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming along nicely."
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (30, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_the_stream_on_the_wire(api: LiveApi, user: User) -> None:
    """`data: {chunk}` lines, then `data: [DONE]`; no usage chunk unless asked."""
    agent = user.agent()
    user.protocol.script(Turn(text="wire", chunk_chars=2))
    with user.http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": agent["id"], "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "wire"


def test_the_agents_own_tools_run_on_the_server(api: LiveApi, user: User) -> None:
    agent = user.agent(mcp_server_ids=[user.demo_mcp_server()])
    user.protocol.script(
        Turn(tool_calls=[("add", {"a": 2, "b": 3})]), Turn(text="2 + 3 = 5.", usage=(50, 7))
    )
    done = sdk(api, user.key).chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "What is 2 + 3?"}]
    )
    message = done.choices[0].message
    assert message.content == "2 + 3 = 5." and not message.tool_calls
    assert user.protocol.requests[0].tool_names() == ["add"]
    results = user.protocol.requests[1].conversation()[-1]["tool_results"]
    assert [text for _, text in results] == ["5"]
    assert done.usage is not None
    assert done.usage.prompt_tokens == 100 + 50  # both model calls of the run


def test_the_agents_tool_policy_applies_and_an_ask_is_refused(api: LiveApi, user: User) -> None:
    """A request cannot wait for a person: an `ask` rule of the agent answers the model with a
    refusal that says why and what to do, and the tool never runs."""
    policy = {"rules": [{"tool": "add", "action": "ask"}]}
    agent = user.agent(mcp_server_ids=[user.demo_mcp_server()], tool_policy=policy)
    user.protocol.script(
        Turn(tool_calls=[("add", {"a": 2, "b": 3})]), Turn(text="I may not compute that here.")
    )
    done = sdk(api, user.key).chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "What is 2 + 3?"}]
    )
    assert done.choices[0].message.content == "I may not compute that here."
    [(_, result)] = user.protocol.requests[1].conversation()[-1]["tool_results"]
    assert "needs a person's approval" in result and "run it in a workflow" in result
    assert result != "5"


def test_a_blocked_message_is_a_400(api: LiveApi, user: User) -> None:
    rail = user.blocking_guardrail("input", r"forbidden")
    agent = user.agent(guardrail_ids=[rail])
    client = sdk(api, user.key)
    for messages in (
        [{"role": "user", "content": "tell me the forbidden thing"}],
        # in an earlier message of the conversation too
        [
            {"role": "user", "content": "forbidden"},
            {"role": "assistant", "content": "?"},
            {"role": "user", "content": "go on"},
        ],
    ):
        with pytest.raises(openai.BadRequestError) as blocked:
            client.chat.completions.create(model=agent["id"], messages=messages)  # type: ignore[arg-type]
        assert blocked.value.code == "guardrail_blocked"
    assert user.protocol.requests == []  # the model never saw it


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_answer_is_a_400(api: LiveApi, user: User, stream: bool) -> None:
    rail = user.blocking_guardrail("output", r"secret")
    agent = user.agent(guardrail_ids=[rail])
    user.protocol.script(Turn(text="the secret code is 1234"))
    with pytest.raises(openai.BadRequestError) as blocked:
        sdk(api, user.key).chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "code?"}], stream=stream
        )
    assert blocked.value.code == "guardrail_blocked"


def test_a_failed_run_is_a_server_error(api: LiveApi, user: User) -> None:
    agent = user.agent()
    user.protocol.script(Turn(status=401, error_body={"error": {"message": "bad key"}}))
    with pytest.raises(openai.InternalServerError) as failed:
        sdk(api, user.key).chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "hello"}]
        )
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_auth_failed"


def test_keys_are_checked(api: LiveApi, user: User) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(api, "tbd_not-a-real-key").models.list()
    response = httpx.get(f"{api.url}/v1/models")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key" and error["message"]


def test_bad_requests(api: LiveApi, user: User) -> None:
    agent = user.agent()
    client = sdk(api, user.key)
    hello = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-agent", messages=hello)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model=agent["id"], messages=hello, n=2)  # type: ignore[arg-type]
    assert many.value.param == "n"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model=agent["id"], messages=hello, tools=[tool])  # type: ignore[arg-type, list-item]
    assert tools.value.param == "tools" and "own tools" in tools.value.message
    with pytest.raises(openai.BadRequestError) as last:
        client.chat.completions.create(
            model=agent["id"], messages=[{"role": "assistant", "content": "hi"}]
        )
    assert last.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model=agent["id"], messages=hello, temperature=9)  # type: ignore[arg-type]
    assert invalid.value.param == "temperature"
    assert user.protocol.requests == []


def test_a_failure_after_the_first_text_ends_the_stream_with_an_error(
    api: LiveApi, user: User
) -> None:
    """The answer had started (200, text sent) when the run failed: an error event, as OpenAI
    sends one, which the SDK raises."""
    agent = user.agent(mcp_server_ids=[user.demo_mcp_server()])
    user.protocol.script(
        Turn(text="Let me add that up.", tool_calls=[("add", {"a": 1, "b": 1})]),
        Turn(status=401, error_body={"error": {"message": "key revoked"}}),
    )
    stream = sdk(api, user.key).chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "1 + 1?"}], stream=True
    )
    received: list[str] = []

    def read_all() -> None:
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as failed:
        read_all()
    assert "".join(received) == "Let me add that up."
    assert "401" in failed.value.message


def test_an_agent_out_of_turns_finishes_with_length(api: LiveApi, user: User) -> None:
    agent = user.agent(max_turns=1)
    user.protocol.script(Turn(text="Partial.", tool_calls=[("lookup", {"q": "x"})]))
    done = sdk(api, user.key).chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "look it up"}]
    )
    assert done.choices[0].finish_reason == "length"
    assert done.choices[0].message.content == "Partial."


def test_a_name_shared_by_two_agents_needs_the_id(api: LiveApi, user: User) -> None:
    first = user.agent("twin")
    user.agent("twin")
    client = sdk(api, user.key)
    with pytest.raises(openai.BadRequestError) as ambiguous:
        client.chat.completions.create(model="twin", messages=[{"role": "user", "content": "hi"}])
    assert ambiguous.value.param == "model" and "id" in ambiguous.value.message
    assert client.models.retrieve(first["id"]).name == "twin"  # type: ignore[attr-defined]


def test_a_read_only_key_lists_but_does_not_run(api: LiveApi, user: User) -> None:
    agent = user.agent()
    client = sdk(api, api.key(user.identity, KeyScope.READ_ONLY))
    assert agent["id"] in [m.id for m in client.models.list().data]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "hi"}]
        )
    assert user.protocol.requests == []


def test_max_tokens_never_raises_the_models_limit(api: LiveApi, user: User) -> None:
    agent = user.agent()
    user.protocol.script(Turn(text="short"), Turn(text="short"))
    client = sdk(api, user.key)
    hello = [{"role": "user", "content": "hello"}]
    client.chat.completions.create(model=agent["id"], messages=hello)  # type: ignore[arg-type]
    limit = user.protocol.requests[-1].body["max_tokens"]
    client.chat.completions.create(
        model=agent["id"],
        messages=hello,  # type: ignore[arg-type]
        max_completion_tokens=limit + 1000,
    )
    assert user.protocol.requests[-1].body["max_tokens"] == limit

"""Webhooks against a real local HTTP receiver: signature, retries with backoff, delivery log,
and the SSRF checks made at send time — on PostgreSQL and on MongoDB."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime.contracts import RunOutcome
from tbd_agents.runtime.service import Runtime
from tbd_agents.runtime.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Delivery,
    HostPolicy,
    WebhookRefused,
    resolve_checked,
    sign,
    verify_signature,
)
from tests.runtime.conftest import RtBackend, make_workflow


@dataclass
class Receiver:
    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes, str]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append((dict(self.headers.items()), body, self.path))
            code = 500 if len(state.requests) <= state.fail_first else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


async def wait_delivery(
    runtime: Runtime, workflow: str, status: str, timeout: float = 15
) -> Delivery:
    deadline = time.monotonic() + timeout
    while True:
        found = await runtime.webhooks.list_deliveries(workflow_id=workflow)
        if found and found[0].status == status:
            return found[0]
        assert time.monotonic() < deadline, f"no {status} delivery: {found}"
        await asyncio.sleep(0.1)


async def test_a_receiver_failing_twice_gets_the_third_signed_attempt(
    rt: RtBackend, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    runtime = await rt.runtime(rt.settings(webhook_allowed_hosts="127.0.0.1"))
    try:
        workflow = await make_workflow(rt, webhook_url=receiver.url())
        task = await runtime.start_run(workflow, "emit:1")
        delivery = await wait_delivery(runtime, workflow, "delivered")
        secret = await runtime.webhooks.secret(workflow)
    finally:
        await runtime.aclose()

    assert [(a.attempt, a.status_code) for a in delivery.log] == [(1, 500), (2, 500), (3, 204)]
    assert delivery.log[0].error == "receiver answered HTTP 500" and delivery.log[2].error is None
    assert delivery.attempts == 3 and delivery.task_id == task.id
    assert len(receiver.requests) == 3
    for headers, body, path in receiver.requests:
        assert path == "/hook"
        assert headers[EVENT_HEADER] == "task.completed"
        assert headers[DELIVERY_HEADER] == delivery.id
        assert headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert verify_signature(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
        assert not verify_signature(
            "whsec_wrong", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]
        )
        payload = json.loads(body)
        assert payload["task_id"] == task.id and payload["status"] == "completed"
        assert payload["result"] == "done: emit:1"


async def test_a_failed_run_calls_the_error_webhook(rt: RtBackend, receiver: Receiver) -> None:
    runtime = await rt.runtime(rt.settings(webhook_allowed_hosts="127.0.0.0/8"))
    try:
        workflow = await make_workflow(
            rt, webhook_url=receiver.url("/ok"), error_webhook_url=receiver.url("/err")
        )
        await runtime.start_run(workflow, "fail")
        delivery = await wait_delivery(runtime, workflow, "delivered")
    finally:
        await runtime.aclose()
    assert delivery.event == "task.failed"
    assert [path for _, _, path in receiver.requests] == ["/err"]
    assert json.loads(receiver.requests[0][1])["error"] == "RuntimeError: scripted failure"


async def test_internal_addresses_are_refused_at_send_time(
    rt: RtBackend, receiver: Receiver
) -> None:
    runtime = await rt.runtime(rt.settings(webhook_max_attempts=2))  # no allow-list
    try:
        workflow = await make_workflow(rt, webhook_url=receiver.url())
        await runtime.start_run(workflow, "emit:1")
        delivery = await wait_delivery(runtime, workflow, "failed")
    finally:
        await runtime.aclose()
    assert receiver.requests == []
    assert [a.status_code for a in delivery.log] == [None, None]
    assert delivery.last_error is not None
    assert (
        "127.0.0.1, an internal address; add the host or address to WEBHOOK_ALLOWED_HOSTS"
        in delivery.last_error
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/x",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest",
        "http://localhost:9/",
        "http://0.0.0.0/",
        "http://[::ffff:192.168.0.1]/",
    ],
)
async def test_internal_targets_need_the_allow_list(url: str) -> None:
    with pytest.raises(WebhookRefused, match="internal address"):
        await resolve_checked(url, HostPolicy.parse(""))


async def test_the_allow_list_takes_names_addresses_and_ranges() -> None:
    host, port, addresses = await resolve_checked(
        "http://localhost:9/", HostPolicy.parse("localhost")
    )
    assert (host, port) == ("localhost", 9) and all(a.is_loopback for a in addresses)
    policy = HostPolicy.parse("10.0.0.0/8, 127.0.0.1")
    assert [str(a) for a in (await resolve_checked("https://10.9.8.7/h", policy))[2]] == [
        "10.9.8.7"
    ]
    assert (await resolve_checked("https://10.9.8.7/h", policy))[1] == 443
    public = await resolve_checked("http://93.184.216.34/", HostPolicy.parse(""))
    assert [str(a) for a in public[2]] == ["93.184.216.34"]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost"])
async def test_only_http_urls_with_a_host_are_sent(url: str) -> None:
    with pytest.raises(WebhookRefused, match="must be http"):
        await resolve_checked(url, HostPolicy.parse(""))


def test_signatures_expire_and_depend_on_every_byte() -> None:
    now = str(int(time.time()))
    good = sign("s3cret", now, b'{"a":1}')
    assert verify_signature("s3cret", now, b'{"a":1}', good)
    assert not verify_signature("s3cret", now, b'{"a":2}', good)
    old = str(int(time.time()) - 3600)
    assert not verify_signature("s3cret", old, b"x", sign("s3cret", old, b"x"))
    assert verify_signature("s3cret", old, b"x", sign("s3cret", old, b"x"), tolerance=None)


async def test_a_host_name_is_sent_to_its_checked_address_and_kept_in_the_host_header(
    rt: RtBackend, receiver: Receiver
) -> None:
    """`localhost` may resolve to ::1 first while the receiver listens on 127.0.0.1 only: the
    next checked address is tried, and the receiver sees the name it was configured with."""
    runtime = await rt.runtime(rt.settings(webhook_allowed_hosts="localhost"))
    try:
        url = f"http://localhost:{receiver.port}/named"
        workflow = await make_workflow(rt, webhook_url=url)
        await runtime.start_run(workflow, "emit:1")
        delivery = await wait_delivery(runtime, workflow, "delivered")
    finally:
        await runtime.aclose()
    assert delivery.attempts == 1
    headers, _, path = receiver.requests[0]
    assert path == "/named" and headers["Host"] == f"localhost:{receiver.port}"


async def test_each_due_delivery_is_claimed_by_one_sender(rt: RtBackend) -> None:
    """Several processes sending at once: every due delivery goes to exactly one of them."""
    workflow = await make_workflow(rt, webhook_url="http://hooks.invalid/x")
    runs = rt.runs
    ids = []
    for i in range(12):
        task = await runs.create_run(workflow, f"p{i}")
        claimed = await runs.claim(task.id, "worker@test")
        assert claimed is not None
        done = await runs.finish(task.id, "worker@test", RunOutcome(TaskStatus.COMPLETED))
        assert done is not None
        ids.append(task.id)
    hold = timedelta(seconds=60)
    batches = await asyncio.gather(*(runs.webhooks.claim_due(5, hold) for _ in range(4)))
    taken = [d.task_id for batch in batches for d in batch]
    assert sorted(taken) == sorted(ids)  # 12 deliveries, each once, among 4 x 5 slots
    assert all(d.attempts == 1 for batch in batches for d in batch)
    assert await runs.webhooks.claim_due(5, hold) == []  # held while being sent
    assert await runs.webhooks.enqueue(await rt.task(ids[0])) is None  # queued once per run

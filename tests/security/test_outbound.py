"""Finding M1 (SSRF): a non-admin's provider, model refresh, MCP server or external knowledge
source must not reach loopback / private / metadata addresses, in any spelling, by DNS, or by
an answer that changes between the check and the connection. Real sockets: a TCP listener on
127.0.0.1 and ::1 counts every connection it accepts; a refused attempt leaves it at 0."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import KnowledgeSourceType, McpTransport, ProviderType
from tbd_agents.domain.models import KnowledgeSource, Provider
from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.messages import ChatRequest, Message
from tbd_agents.engine.providers import ProviderSettings, build_provider, complete
from tbd_agents.engine.tools.mcp import McpConnection, McpServerConfig
from tbd_agents.errors import TbdError
from tbd_agents.knowledge.external import search_external
from tbd_agents.security import outbound
from tbd_agents.security.outbound import Address, OutboundPolicy, OutboundRefused
from tbd_agents.services.keys import ApiKeys
from tbd_agents.services.models import list_provider_models
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.support import pg

FAST = EngineConfig(model_timeout=3, model_max_retries=0, mcp_connect_timeout=3)
SPACE = EmbeddingSpace("tbd-hashing-v1", 4)


class Listener:
    """Accepts TCP connections on 127.0.0.1 and ::1 (one port), counts them, answers 404."""

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.hits += 1
                self.request.settimeout(1.0)
                try:
                    self.request.recv(65536)
                    self.request.sendall(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass

        class V6(socketserver.ThreadingTCPServer):
            address_family = socket.AF_INET6

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.v4 = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.v4.server_address[1]
        self.v6 = V6(("::1", self.port), Handler)
        for server in (self.v4, self.v6):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.v4, self.v6):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


#: Names our resolver hook answers (DNS that points inside; nothing leaves the machine).
FAKE_DNS = {
    "loop.attacker.test": ["127.0.0.1"],
    "ten.attacker.test": ["10.20.30.40"],
    "mixed.attacker.test": ["93.184.216.34", "127.0.0.1"],  # one good, one internal address
    "meta.attacker.test": ["169.254.169.254"],
    "v6loop.attacker.test": ["::1"],
    "mapped.attacker.test": ["::ffff:127.0.0.1"],
}

#: 36 hosts that are, or resolve to, loopback / private / link-local / metadata addresses.
SPELLINGS = [
    "127.0.0.1", "127.1", "127.0.1", "0x7f000001", "2130706433", "0177.0.0.1", "0x7f.0.0.1",
    "017700000001", "0x7f.1", "127.000.000.001", "[::1]", "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "localhost", "localhost.",
    "LOCALHOST", "0.0.0.0", "0", "[::]", "[::ffff:0.0.0.0]", "[fe80::1%25lo]", "10.0.0.1",
    "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "[fd00:ec2::254]",
    "[::ffff:169.254.169.254]", "[fc00::1]", *FAKE_DNS,
]  # fmt: skip


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = outbound.system_resolve

    async def resolve(host: str, port: int) -> list[Address]:
        if host.lower() in FAKE_DNS:
            return [ipaddress.ip_address(a) for a in FAKE_DNS[host.lower()]]
        return await real(host, port)

    monkeypatch.setattr(outbound, "resolve_host", resolve)


@pytest.fixture(scope="module")
def api_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="outbound")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
async def api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    store = PostgresStore(create_engine(api_db, pool_size=4, max_overflow=4), url=api_db)
    app = create_app(make_settings(tmp_path_factory.mktemp("api")), store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, app.state.ctx.settings)
    await store.close()


async def policy_of(api: Api, owner: str) -> OutboundPolicy:
    async with api.store.unit_of_work() as repos:
        return await outbound_guard(api.settings).policy_for(repos, owner)


async def owner(api: Api, admin: bool) -> str:
    name = f"{'admin' if admin else 'user'}-{uuid.uuid4().hex[:8]}"
    async with api.store.unit_of_work() as repos:
        await ApiKeys(repos).create(name, scope=KeyScope.ADMIN if admin else KeyScope.USER)
    return name


# --- the five connections, each as the code path that makes it -------------------------------
async def chat(url: str, policy: OutboundPolicy, api: Api) -> None:
    settings = ProviderSettings(
        "p", ProviderType.CUSTOM, base_url=f"{url}/v1", outbound=policy, api_key="k"
    )
    provider = build_provider(settings, FAST)
    try:
        await complete(provider, ChatRequest("m", [Message(role="user", content="hi")]))
    finally:
        await provider.aclose()


async def refresh(url: str, policy: OutboundPolicy, api: Api) -> None:
    record = Provider(
        name=f"p-{uuid.uuid4().hex[:6]}", provider_type=ProviderType.CUSTOM, base_url=f"{url}/v1"
    )
    record.created_by = await owner(api, policy.trusted)
    async with api.store.unit_of_work() as repos:
        guard = outbound_guard(api.settings)
        await list_provider_models(repos, api.app.state.ctx.cipher(), guard, record, refresh=True)


def mcp(transport: McpTransport) -> Callable[[str, OutboundPolicy, Api], Awaitable[None]]:
    async def connect(url: str, policy: OutboundPolicy, api: Api) -> None:
        path = "/sse" if transport is McpTransport.SSE else "/mcp"
        cfg = McpServerConfig("m", transport, url=url + path, connect_timeout=3, outbound=policy)
        conn = McpConnection(cfg)
        try:
            await conn.connect()
        finally:
            await conn.aclose()

    return connect


async def qdrant(url: str, policy: OutboundPolicy, api: Api) -> None:
    source = KnowledgeSource(
        name="q", source_type=KnowledgeSourceType.QDRANT, connection_config={"url": url, "collection": "c"}
    )  # fmt: skip
    await search_external(source, [0.1] * 4, SPACE, 3, policy)


async def pgvector(url: str, policy: OutboundPolicy, api: Api) -> None:
    uri = url.replace("http://", "postgresql://u:p@") + "/db"
    cfg = {"uri": uri, "table": "t"}
    source = KnowledgeSource(
        name="pg", source_type=KnowledgeSourceType.PGVECTOR, connection_config=cfg
    )
    await search_external(source, [0.1] * 4, SPACE, 3, policy)


CONNECTIONS = {
    "chat": chat,
    "refresh": refresh,
    "mcp_sse": mcp(McpTransport.SSE),
    "mcp_http": mcp(McpTransport.STREAMABLE_HTTP),
    "qdrant": qdrant,
    "pgvector": pgvector,
}


@pytest.mark.parametrize("kind", CONNECTIONS)
async def test_every_internal_spelling_is_refused_for_a_user_owned_record(
    kind: str, api: Api, listener: Listener
) -> None:
    policy = await policy_of(api, await owner(api, admin=False))
    assert not policy.trusted
    before = listener.hits
    refused = 0
    for host in SPELLINGS:
        with pytest.raises(Exception) as caught:
            await CONNECTIONS[kind](f"http://{host}:{listener.port}", policy, api)
        if isinstance(caught.value, OutboundRefused):
            message = caught.value.message
            assert "OUTBOUND_ALLOWED_HOSTS" in message or "cannot resolve" in message, message
            refused += 1
        else:  # the client's URL parser refuses a few spellings itself (e.g. 0177.0.0.1)
            assert "URL" in type(caught.value).__name__ or "url" in str(caught.value).lower(), (
                host,
                caught.value,
            )
    assert refused >= 30, refused
    assert listener.hits == before, f"{kind}: {listener.hits - before} connections got through"
    assert len(SPELLINGS) >= 33


@pytest.mark.parametrize(
    ("kind", "who"),
    [(k, "admin") for k in CONNECTIONS]
    + [(k, "allow_list") for k in CONNECTIONS if k != "refresh"],  # refresh: see test_models
)
async def test_admins_and_the_allow_list_reach_the_listener(
    kind: str, who: str, api: Api, listener: Listener
) -> None:
    if who == "admin":
        policy = await policy_of(api, await owner(api, admin=True))
        assert policy.trusted
    else:
        policy = OutboundPolicy(outbound.HostPolicy.parse("loop.attacker.test, ::1"))
    for host in ("loop.attacker.test", "[::1]"):
        before = listener.hits
        with pytest.raises(Exception) as caught:  # the listener speaks no protocol we expect
            await CONNECTIONS[kind](f"http://{host}:{listener.port}", policy, api)
        assert not isinstance(caught.value, OutboundRefused), caught.value
        assert listener.hits > before, f"{kind} as {who} did not reach {host}"


async def test_metadata_is_refused_even_for_admins(api: Api, listener: Listener) -> None:
    policy = await policy_of(api, await owner(api, admin=True))
    for host in ("169.254.169.254", "[fd00:ec2::254]", "meta.attacker.test"):
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            await chat(f"http://{host}:{listener.port}", policy, api)


async def test_a_changing_dns_answer_cannot_reach_the_internal_address(
    monkeypatch: pytest.MonkeyPatch, api: Api, listener: Listener
) -> None:
    """`localhost` resolves to 127.0.0.1 on this host; the policy's resolver first answers a
    public address (unreachable here: no internet), then 127.0.0.1. Pinned connections go to the checked
    address, so the listener is never reached; an unpinned client would re-resolve."""
    answers = iter([["93.184.216.34"]] + [["127.0.0.1"]] * 50)

    async def rebinding(host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address(a) for a in next(answers)]

    monkeypatch.setattr(outbound, "resolve_host", rebinding)
    policy = await policy_of(api, await owner(api, admin=False))
    before = listener.hits
    with pytest.raises(TbdError) as caught:
        await chat(f"http://localhost:{listener.port}", policy, api)
    assert not isinstance(caught.value, OutboundRefused)  # it passed the check, then failed
    assert listener.hits == before


async def test_save_time_refuses_literal_internal_hosts_for_users(
    api: Api, listener: Listener
) -> None:
    async with await api.user() as alice, await api.user(None, KeyScope.ADMIN) as admin:
        for host in ("127.1", "0x7f000001", "[::ffff:127.0.0.1]", "localhost.", "169.254.169.254"):
            body = {"name": uniq(), "provider_type": "custom", "base_url": f"http://{host}/v1"}
            answer = await alice.post("/api/providers", json=body)
            assert answer.status_code == 422, answer.text
            assert "OUTBOUND_ALLOWED_HOSTS" in answer.text
        body = {
            "name": uniq(),
            "transport_type": "sse",
            "connection_config": {"url": "http://2130706433/sse"},
        }
        assert (await alice.post("/api/mcps", json=body)).status_code == 422
        for cfg in (
            {"path": "/tmp/q", "collection": "c"},
            {"uri": "postgresql://u@x/db?host=/tmp"},
        ):
            body = {"name": uniq(), "source_type": "qdrant" if "path" in cfg else "pgvector",
                    "connection_config": cfg}  # fmt: skip
            answer = await alice.post("/api/knowledge-sources", json=body)
            assert answer.status_code == 422, answer.text
        body = {"name": uniq(), "provider_type": "custom", "base_url": "http://127.1:9/v1"}
        assert (await admin.post("/api/providers", json=body)).status_code == 201
        # A DNS name passes the save-time check; the refresh then refuses it (422, no hit).
        body = {"name": uniq(), "provider_type": "custom",
                "base_url": f"http://loop.attacker.test:{listener.port}/v1"}  # fmt: skip
        created = await alice.post("/api/providers", json=body)
        assert created.status_code == 201, created.text
        before = listener.hits
        live = await alice.get(f"/api/providers/{created.json()['id']}/models?refresh=true")
        assert live.status_code == 422 and "127.0.0.1" in live.text, live.text
        assert listener.hits == before


async def test_pgvector_sockets_are_refused_for_users(api: Api) -> None:
    policy = OutboundPolicy()
    for uri in (
        "postgresql://u@/db",
        "postgresql://u@/db?host=/tmp",
        "postgresql://u@example.com/db?host=/tmp",
        "postgresql://u@example.com,127.0.0.1/db",
    ):
        with pytest.raises(OutboundRefused):
            await outbound.pin_pg_uri(uri, policy)
    pinned = await outbound.pin_pg_uri(
        "postgresql://u:p@ten.attacker.test/db", OutboundPolicy(trusted=True)
    )
    assert "@10.20.30.40/" in pinned


def uniq() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"

"""Request-size, upload and extraction limits and no-store, attacked for real: a uvicorn server on
a loopback socket (same process, so its memory is measurable), the embedded PostgreSQL of the API
tests, and extraction worker processes that really run and get killed. (The /docs pages and their
policy: test_docs_page.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import statistics
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import unquote, urlsplit

import httpx
import psutil
import pytest
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject
from sqlalchemy.engine import URL

from tests.api.conftest import Api, api, api_db, make_settings  # noqa: F401
from tests.api.factory import create
from tests.api.live import live_server

MB = 1024 * 1024


@pytest.fixture(scope="module")
def live_url(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """The app with the default limits on a real socket."""
    settings = make_settings(
        tmp_path_factory.mktemp("limits"),
        postgres_uri=api_db.render_as_string(hide_password=False),
        postgres_pool_size=4,
    )
    with live_server(settings) as url:
        yield url


@pytest.fixture
async def client(api: Api, live_url: str) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    headers = {"Authorization": f"Bearer {await api.key()}"}
    async with httpx.AsyncClient(base_url=live_url, headers=headers, timeout=120) as c:
        yield c


def pdf_bomb(pages: int, ops: int) -> bytes:
    """A small PDF whose text is huge: one Flate-compressed content stream of `ops` text lines
    (64 characters each), shared by every page."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    line = b"(" + b"A" * 64 + b") Tj "
    stream = StreamObject()
    stream._data = zlib.compress(b"BT /F1 1 Tf " + line * ops + b"ET", 9)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    contents = writer._add_object(stream)
    resources = writer._add_object(
        DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
        )
    )
    for _ in range(pages):
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Contents")] = contents
        page[NameObject("/Resources")] = resources
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def extraction_workers() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "tbd_agents.knowledge.isolate" in " ".join(p.cmdline())
    ]


class RssSampler:
    """Peak resident memory of this process (which runs the server) while it is active."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- request bodies -----------------------------------------------------------------------------
async def test_200_mb_chunked_json_is_refused_early_with_bounded_memory(
    client: httpx.AsyncClient,
) -> None:
    name = f"huge-{time.monotonic_ns()}"
    sent = 0
    chunk = b"A" * MB

    async def body() -> AsyncIterator[bytes]:  # 200 MB, never in memory at once, no length
        nonlocal sent
        yield b'{"name": "' + name.encode() + b'", "description": "'
        for _ in range(200):
            sent += len(chunk)
            yield chunk
        yield b'"}'

    with RssSampler() as rss:
        started = time.monotonic()
        try:
            response = await client.post(
                "/api/agents", content=body(), headers={"Content-Type": "application/json"}
            )
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            pytest.fail(f"the server dropped the connection without a 413: {exc!r}")
        elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "MAX_REQUEST_BODY_MB" in error["message"] and "10 MB" in error["message"]
    growth = (rss.peak - rss.start) / MB
    print(
        f"\n200 MB chunked JSON: 413 after {sent / MB:.0f} MB sent (the rest drained), "
        f"{elapsed:.2f} s, peak RSS growth {growth:.1f} MB"
    )
    assert growth < 80, f"server RSS grew by {growth:.0f} MB"
    listed = (await client.get("/api/agents", params={"name": name})).json()
    assert listed == [], "the handler ran"


def test_declared_content_length_over_the_limit_is_refused_before_the_body(
    live_url: str,
) -> None:
    host, port = urlsplit(live_url).hostname, urlsplit(live_url).port
    assert host is not None and port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n{"
        )
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "MAX_REQUEST_BODY_MB" in reply


def test_chunked_body_is_refused_as_soon_as_it_passes_the_limit(live_url: str) -> None:
    """11 MB of chunks and no final chunk: the 413 comes while the body is still open."""
    host, port = urlsplit(live_url).hostname, urlsplit(live_url).port
    assert host is not None and port is not None
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n%s\r\n" % (MB, b"C" * MB)
        for _ in range(11):
            sock.sendall(piece)
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "MAX_REQUEST_BODY_MB" in reply


async def test_body_longer_than_its_content_length_is_counted(api: Api) -> None:  # noqa: F811
    """In-process (the ASGI server would cut the body at Content-Length): the middleware
    counts what arrives, not what the header says."""
    chunks = [b'{"name": "liar", "description": "', b"B" * (11 * MB), b'"}']

    async def body() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async with await api.user() as client:
        response = await client.post(
            "/api/agents",
            content=body(),
            headers={"Content-Type": "application/json", "Content-Length": "20"},
        )
    assert response.status_code == 413 and "MAX_REQUEST_BODY_MB" in response.text


async def test_upload_routes_get_the_upload_limit(client: httpx.AsyncClient) -> None:
    source = await create(client, "knowledge-sources")
    eleven = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("big.bin", b"\x00" * (11 * MB), "application/x-unknown")},
    )
    assert eleven.status_code == 422, eleven.text  # past the 10 MB body limit, refused by type
    sixty = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("big.txt", b"x" * (60 * MB), "text/plain")},
    )
    assert sixty.status_code == 413, sixty.text
    assert "MAX_UPLOAD_MB" in sixty.json()["error"]["message"]


async def test_deeply_nested_json_body_is_422_not_500(client: httpx.AsyncClient) -> None:
    deep = '{"name": "deep", "tags": ' + "[" * 5000 + "]" * 5000 + "}"
    response = await client.post(
        "/api/agents", content=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_data"
    assert "MAX_JSON_DEPTH" in response.json()["error"]["message"]
    unbalanced = await client.post("/api/agents", content="[" * 5000)  # no content type
    assert unbalanced.status_code == 422 and "MAX_JSON_DEPTH" in unbalanced.text
    ok = await client.post(
        "/api/agents", json={"name": f"nested-{time.monotonic_ns()}", "tags": ["a"]}
    )
    assert ok.status_code == 201, ok.text


async def test_deeply_nested_json_knowledge_file_is_422(client: httpx.AsyncClient) -> None:
    source = await create(client, "knowledge-sources")
    response = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("deep.json", b"[" * 5000 + b"]" * 5000, "application/json")},
    )
    assert response.status_code == 422, response.text
    assert "MAX_JSON_DEPTH" in response.json()["error"]["message"]


async def test_json_file_whose_paths_outgrow_the_text_limit_is_413(
    client: httpx.AsyncClient,
) -> None:
    """Each leaf line repeats its path: 60 nested 40 KB keys over 3,000 leaves would be 7 GB."""
    key = "k" * 40_000
    doc = json.dumps(
        json.loads("{" + ":{".join(f'"{key}{i}"' for i in range(60)) + ": null" + "}" * 60)
    ).replace("null", json.dumps(list(range(3000))))
    source = await create(client, "knowledge-sources")
    response = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("paths.json", doc.encode(), "application/json")},
    )
    assert response.status_code == 413, response.text
    assert "KNOWLEDGE_MAX_EXTRACTED_CHARS" in response.json()["error"]["message"]


# --- PDF bombs ----------------------------------------------------------------------------------
async def _health_latencies(url: str, stop: asyncio.Event) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
        while not stop.is_set():
            started = time.monotonic()
            assert (await probe.get("/health")).status_code == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    return latencies


async def test_pdf_bomb_is_refused_while_health_stays_fast(
    client: httpx.AsyncClient, live_url: str
) -> None:
    bomb = pdf_bomb(pages=1900, ops=2000)  # ~128,000 characters per page, 243 M in all
    assert len(bomb) < 400_000
    source = await create(client, "knowledge-sources")
    stop = asyncio.Event()
    probe = asyncio.create_task(_health_latencies(live_url, stop))
    started = time.monotonic()
    response = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("bomb.pdf", bomb, "application/pdf")},
    )
    elapsed = time.monotonic() - started
    stop.set()
    latencies = await probe
    assert response.status_code == 413, response.text
    assert "KNOWLEDGE_MAX_EXTRACTED_CHARS" in response.json()["error"]["message"]
    assert elapsed < 60  # KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS
    worst = max(latencies)
    print(
        f"\nPDF bomb ({len(bomb)} bytes, 1,900 pages): 413 after {elapsed:.1f} s; /health "
        f"x{len(latencies)} median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms"
    )
    assert len(latencies) >= 5 and worst < 1.0
    assert extraction_workers() == []


async def test_pdf_with_too_many_pages_is_refused_before_extraction(
    client: httpx.AsyncClient,
) -> None:
    source = await create(client, "knowledge-sources")
    started = time.monotonic()
    response = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("pages.pdf", pdf_bomb(pages=2001, ops=1), "application/pdf")},
    )
    assert response.status_code == 413, response.text
    assert "KNOWLEDGE_MAX_PDF_PAGES" in response.json()["error"]["message"]
    assert time.monotonic() - started < 15


async def test_slow_extraction_is_killed_at_the_time_limit(
    api_db: URL,  # noqa: F811
    api: Api,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = make_settings(
        tmp_path_factory.mktemp("slow"),
        postgres_uri=api_db.render_as_string(hide_password=False),
        postgres_pool_size=2,
        knowledge_extract_timeout_seconds=2,
    )
    bomb = pdf_bomb(pages=1, ops=60_000)  # one page of 3.8 M characters: several seconds
    headers = {"Authorization": f"Bearer {await api.key()}"}
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
            source = await create(c, "knowledge-sources")
            started = time.monotonic()
            response = await c.post(
                "/api/knowledge-items/upload",
                data={"source_id": source["id"]},
                files={"file": ("slow.pdf", bomb, "application/pdf")},
            )
            elapsed = time.monotonic() - started
    print(f"\nslow PDF: {response.status_code} after {elapsed:.1f} s (limit 2 s)")
    assert response.status_code == 422, response.text
    assert "KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS" in response.json()["error"]["message"]
    assert elapsed < 8
    assert extraction_workers() == []


# --- downloads, headers -------------------------------------------------------------------------
async def test_non_ascii_download_name(client: httpx.AsyncClient) -> None:
    source = await create(client, "knowledge-sources")
    name = "Überblick Q3 東京.md"
    uploaded = await client.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": (name, b"# Notes\n\nKyoto and Tokyo.\n", "text/markdown")},
    )
    assert uploaded.status_code == 201, uploaded.text
    got = await client.get(f"/api/knowledge-items/{uploaded.json()['id']}/content")
    assert got.status_code == 200, got.text
    disposition = got.headers["content-disposition"]
    assert disposition.isascii()
    assert 'filename="_berblick Q3 __.md"' in disposition
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == name == uploaded.json()["file_name"]
    from tbd_agents.api.routers.knowledge import content_disposition

    tricky = content_disposition('a"b\\c\r\nSet-Cookie: x.txt')
    assert tricky.startswith('attachment; filename="a_b_c__Set-Cookie: x.txt"; filename*=')
    assert "\r" not in tricky and "\n" not in tricky


async def test_api_responses_are_no_store(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/tokens", json={"name": f"tok-{time.monotonic_ns()}", "value": "s3cret-value"}
    )
    assert created.status_code == 201, created.text
    for response in (
        created,
        await client.get("/api/tokens"),
        await client.get(f"/api/tokens/{created.json()['id']}"),
        await client.post("/api/keys", json={"name": "k"}),
        await client.get("/api/nothing-here"),
    ):
        assert response.headers["cache-control"] == "no-store", response.request.url
    assert "no-store" not in (await client.get("/health")).headers.get("cache-control", "")


async def test_extraction_worker_memory_is_capped() -> None:
    """A real worker process with a 128 MB address-space cap, fed a file that needs far more."""
    from tbd_agents.errors import PayloadTooLarge
    from tbd_agents.knowledge.extract import ExtractLimits
    from tbd_agents.knowledge.isolate import extract_isolated

    data = b"[" + b"1," * 40_000_000 + b"1]"  # 80 MB of JSON: a list of 40 M numbers
    limits = ExtractLimits(max_chars=10**9, memory_mb=128, timeout_seconds=60)
    with pytest.raises(PayloadTooLarge) as refused:
        await extract_isolated(data, "application/json", limits)
    assert "KNOWLEDGE_EXTRACT_MEMORY_MB" in refused.value.message
    assert extraction_workers() == []

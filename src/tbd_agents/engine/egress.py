"""The egress proxy of a confined tool: the only way out of its empty network namespace.

It listens on a unix socket shown inside the tool's view (a relay in the sandbox forwards
127.0.0.1:3128 to it, and HTTP(S)_PROXY point there). It understands `CONNECT host:port` (HTTPS
and any TCP protocol) and plain-HTTP requests in absolute form (`GET http://host/path`), and
connects only when
- the host is in the tool's `allowed_hosts` (`name`, `*.suffix` or either with `:port`; without
  a port only 80 and 443), and
- every address the host resolves to is public, or the operator allowed it in
  OUTBOUND_ALLOWED_HOSTS (loopback, private, link-local such as 169.254.169.254, …
  are refused otherwise), the same check webhooks use.
It then connects to the checked address (not a second lookup) and splices bytes both ways.
Anything else gets a `403` with the reason in the body, which is what the tool sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tbd_agents.security.outbound import HostPolicy, OutboundPolicy, OutboundRefused, check_host

log = logging.getLogger(__name__)

MAX_HEAD = 65536
DEFAULT_PORTS = (80, 443)


class Refused(Exception):
    pass


def host_allowed(host: str, port: int, allowed: Sequence[str]) -> bool:
    """Whether `host:port` matches one of the tool's `allowed_hosts` entries."""
    host = host.lower().rstrip(".")
    for item in allowed:
        name, _, want = item.strip().lower().rpartition(":")
        if not name or not want.isdigit():  # no port given (or an IPv6 literal without one)
            name, want = item.strip().lower(), ""
        name = name.strip("[]").rstrip(".")
        ports = (int(want),) if want else DEFAULT_PORTS
        if port not in ports:
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def parse_target(head: bytes) -> tuple[str, int, bytes | None]:
    """(host, port, the request to forward or None for CONNECT) from a proxy request head."""
    line, _, rest = head.partition(b"\r\n")
    try:
        method, target, version = line.decode("latin-1").split(" ")
    except ValueError:
        raise Refused("not an HTTP proxy request") from None
    if method.upper() == "CONNECT":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise Refused(f"CONNECT needs host:port, got {target!r}")
        return host.strip("[]"), int(port), None
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise Refused("plain requests must use an absolute http:// URL (HTTPS goes via CONNECT)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    forwarded = f"{method} {path} {version}\r\n".encode("latin-1") + rest
    return parts.hostname, parts.port or 80, forwarded


class EgressProxy:
    """One proxy per confined process, for as long as the process runs."""

    def __init__(self, allowed: Sequence[str], policy: HostPolicy) -> None:
        self.allowed = list(allowed)
        self.policy = policy
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls,
        path: Path,
        allowed: Sequence[str],
        internal_hosts: str,
        *,
        owner: tuple[int, int] | None = None,
    ) -> EgressProxy:
        proxy = cls(allowed, HostPolicy.parse(internal_hosts))
        proxy._server = await asyncio.start_unix_server(proxy._serve, path=str(path))
        if owner is not None:
            os.chown(path, *owner)  # the sandbox user connects to it
        os.chmod(path, 0o600)
        return proxy

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            if len(head) > MAX_HEAD:
                raise Refused("request head too large")
            host, port, forward = parse_target(head)
            up_reader, up_writer = await self._connect(host, port)
        except Refused as exc:
            body = f"tbd-agents sandbox egress refused: {exc}\n".encode()
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        if forward is None:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(forward)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not host_allowed(host, port, self.allowed):
            raise Refused(f"{host}:{port} is not in this tool's allowed_hosts")
        policy = OutboundPolicy(allowed=self.policy, hint="")  # tools are never trusted
        try:
            addresses = await check_host(host, port, policy, "tool network")
        except OutboundRefused as exc:
            raise Refused(exc.message) from None
        last: OSError | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(address), port), 10)
            except (OSError, TimeoutError) as exc:
                last = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise Refused(f"cannot connect to {host}:{port}: {last}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass

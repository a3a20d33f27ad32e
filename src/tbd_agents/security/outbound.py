"""One outbound-address policy for every connection the hub makes on behalf of a record.

Provider API calls, model listing, MCP servers over SSE / streamable HTTP, external knowledge
collections (Qdrant, pgvector) and webhooks all go through this module, and so must every future
feature that connects to a user-given address (a web_fetch tool, repository checkout…): build its
HTTP client with `http_client(policy)` (or `mcp_http_client` for the `httpx2` stack), or call
`check_url` / `check_host` and connect to one of the addresses they return.

The rules:

- The host is resolved (`resolve_host`, getaddrinfo: every literal spelling such as `127.1`,
  `0x7f000001`, `2130706433` or `[::ffff:127.0.0.1]` is normalised the same way) and *every*
  address is checked, not only the first.
- Internal addresses (private, loopback, link-local, shared, multicast, reserved, unspecified,
  IPv4-mapped forms of those) are refused unless the record's owner is an admin (`trusted`) or
  the host / address is listed in the operator allow-list (`OUTBOUND_ALLOWED_HOSTS`).
- Cloud metadata addresses (169.254.169.254, fd00:ec2::254, …) are refused for everyone unless
  the allow-list names them.
- The connection then goes to a checked address (pinned): the name is not resolved again, so a
  DNS answer that changes between the check and the connection cannot redirect it. The Host
  header and TLS SNI keep the original name. Each request (and so each redirect hop) is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import httpx2

from tbd_agents.errors import InvalidData

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "OUTBOUND_ALLOWED_HOSTS"
#: Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS task role, Alibaba).
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(InvalidData):
    """A connection to an address the outbound policy does not permit."""

    code = "outbound_refused"


@dataclass(frozen=True)
class HostPolicy:
    """An allow-list of host names and networks (the `*_ALLOWED_HOSTS` settings syntax:
    comma-separated names, IP addresses or CIDR ranges)."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> HostPolicy:
        names: set[str] = set()
        networks: list[Network] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.add(item.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def permits(self, host: str, address: Address) -> bool:
        if host.lower().rstrip(".") in self.names:
            return True
        return any(address in net for net in self.networks)


def _embedded(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_internal(address: Address) -> bool:
    """True for every address that is not a public unicast one."""
    address = _embedded(address)
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def is_metadata(address: Address) -> bool:
    return _embedded(address) in METADATA


@dataclass(frozen=True)
class OutboundPolicy:
    """What one record's connections may reach: `trusted` when its owner is an admin."""

    allowed: HostPolicy = field(default_factory=HostPolicy)
    trusted: bool = False
    setting: str = SETTING
    hint: str = "; records owned by an admin may reach internal addresses"

    def refusal(self, host: str, address: Address, what: str) -> str | None:
        """None if `address` (resolved from `host`) may be reached, else why not."""
        if self.allowed.permits(host, address):
            return None
        if is_metadata(address):
            return (
                f"{what} host {host!r} resolves to {address}, a cloud metadata service (an "
                f"internal address refused for every owner); add the address to {self.setting} "
                "if this is really wanted"
            )
        if is_internal(address) and not self.trusted:
            return (
                f"{what} host {host!r} resolves to {address}, an internal address; add the host "
                f"or address to {self.setting} to allow it{self.hint}"
            )
        return None


class Resolver(Protocol):
    async def __call__(self, host: str, port: int) -> list[Address]: ...


async def system_resolve(host: str, port: int) -> list[Address]:
    """Every address getaddrinfo gives for `host` (zone ids dropped), in its order, no repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


#: The resolver used for every check (tests replace it to simulate DNS answers).
resolve_host: Resolver = system_resolve


async def check_host(host: str, port: int, policy: OutboundPolicy, what: str) -> list[Address]:
    """The addresses of `host` to connect to, all checked; OutboundRefused if any is refused."""
    name = host.split("%")[0]
    try:
        addresses = await resolve_host(name, port)
    except (OSError, UnicodeError) as exc:
        raise OutboundRefused(f"cannot resolve {what} host {host!r}: {exc}") from None
    if not addresses:
        raise OutboundRefused(f"{what} host {host!r} has no address")
    for address in addresses:
        problem = policy.refusal(host, address, what)
        if problem is not None:
            raise OutboundRefused(problem, details={"host": host, "address": str(address)})
    return addresses


async def check_url(
    url: str, policy: OutboundPolicy, what: str = "outbound"
) -> tuple[str, int, list[Address]]:
    """(host, port, checked addresses) of an http(s) URL, or OutboundRefused saying why not."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused(f"{what} URL must be http:// or https:// with a host, got {url!r}")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    return host, port, await check_host(host, port, policy, what)


def literal_address(host: str) -> Address | None:
    """The address a literal host means in any spelling (`127.1`, `0x7f000001`, `[::1]`…), or
    None for a DNS name. `localhost` names count as loopback."""
    host = host.strip("[]").split("%")[0].lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%")[0])


def check_saved_url(url: str | None, policy: OutboundPolicy, what: str) -> None:
    """Save-time check: refuse (422) a URL whose host is a literal address the policy refuses.
    DNS names pass here; they are checked when connecting (their answers can change)."""
    if not url or "{{" in url:
        return
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return
    address = literal_address(host) if host else None
    if address is not None and host is not None:
        problem = policy.refusal(host, address, what)
        if problem is not None:
            raise OutboundRefused(problem, details={"host": host, "address": str(address)})


def pinned_url(url: str, address: Address, port: int) -> str:
    """`url` with its host replaced by `address` (for clients that cannot take a transport)."""
    parts = urlsplit(url)
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    return urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, ""))


# --- pinned HTTP ---------------------------------------------------------------------------
class _Pinning:
    """Shared by the httpx and httpx2 transports: check the request's host, then send it to a
    checked address (next address on a connect error) with Host/SNI kept."""

    policy: OutboundPolicy
    what: str

    async def _pinned(
        self, request: Any, send: Any, connect_errors: tuple[type[Exception], ...]
    ) -> Any:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        addresses = await check_host(host, port, self.policy, self.what)
        original = request.url
        request.extensions = {**request.extensions, "sni_hostname": host}
        error: Exception | None = None
        for address in addresses:
            request.url = original.copy_with(host=str(address))
            try:
                return await send(request)
            except connect_errors as exc:
                error = exc
            finally:
                request.url = original
        assert error is not None
        raise error


class PinnedTransport(_Pinning, httpx.AsyncBaseTransport):
    """An httpx transport that applies `policy` to every request (see the module docstring)."""

    def __init__(self, policy: OutboundPolicy, what: str = "outbound", **kwargs: Any) -> None:
        self.policy, self.what = policy, what
        self.inner = httpx.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = await self._pinned(
            request, self.inner.handle_async_request, (httpx.ConnectError,)
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class PinnedTransport2(_Pinning, httpx2.AsyncBaseTransport):
    """The same for the `httpx2` stack the `mcp` SDK uses."""

    def __init__(self, policy: OutboundPolicy, what: str = "outbound", **kwargs: Any) -> None:
        self.policy, self.what = policy, what
        self.inner = httpx2.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = await self._pinned(
            request, self.inner.handle_async_request, (httpx2.ConnectError,)
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_client(policy: OutboundPolicy, what: str = "outbound", **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client whose every request is checked and pinned; no redirects followed, no
    proxy or other settings taken from the environment (a proxy would bypass the check)."""
    kwargs.setdefault("follow_redirects", False)
    return httpx.AsyncClient(transport=PinnedTransport(policy, what), trust_env=False, **kwargs)


def mcp_http_client(
    policy: OutboundPolicy, what: str = "MCP server", **kwargs: Any
) -> httpx2.AsyncClient:
    """`http_client` for the `httpx2` stack (the `mcp` SDK and the `anthropic` SDK)."""
    kwargs.setdefault("follow_redirects", False)
    return httpx2.AsyncClient(transport=PinnedTransport2(policy, what), trust_env=False, **kwargs)


# --- PostgreSQL ----------------------------------------------------------------------------
#: Query parameters a non-admin's PostgreSQL URI may carry (no `host=`, sockets, files…).
PG_SAFE_PARAMS = frozenset({"ssl", "sslmode", "application_name", "connect_timeout"})


def _pg_parts(uri: str, what: str) -> tuple[Any, str | None]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        raise InvalidData(f"{what} is not a database URI (postgresql://user@host/db)") from None
    return url, url.host


def check_saved_pg_uri(uri: str | None, policy: OutboundPolicy, what: str) -> None:
    """Save-time form of `pin_pg_uri` for the parts that need no DNS."""
    if not uri or "{{" in uri or policy.trusted:
        return
    url, host = _pg_parts(uri, what)
    _pg_untrusted_shape(url, host, policy, what)
    if host:
        address = literal_address(host)
        problem = policy.refusal(host, address, what) if address else None
        if problem is not None:
            raise OutboundRefused(problem, details={"host": host, "address": str(address)})


def _pg_untrusted_shape(url: Any, host: str | None, policy: OutboundPolicy, what: str) -> None:
    extra = sorted(set(url.query) - PG_SAFE_PARAMS)
    if extra:
        raise OutboundRefused(
            f"{what}: query parameter {extra[0]!r} is not allowed in the URI of a non-admin "
            f"owner (allowed: {', '.join(sorted(PG_SAFE_PARAMS))})"
        )
    if not host or host.startswith("/") or "," in host:
        raise OutboundRefused(
            f"{what} must name one network host (postgresql://user@host:5432/db); unix sockets "
            f"and default hosts are refused for non-admin owners ({policy.setting} does not "
            "apply to sockets)"
        )


async def pin_pg_uri(uri: str, policy: OutboundPolicy, what: str = "pgvector") -> str:
    """The URI to connect with: host checked and replaced by a checked address. Non-admin
    owners may not use unix sockets, several hosts or `host=`-style query parameters."""
    url, host = _pg_parts(uri, what)
    if not policy.trusted:
        _pg_untrusted_shape(url, host, policy, what)
    elif not host or host.startswith("/") or "," in host or "host" in url.query:
        return uri  # an admin's socket or multi-host URI: used as written
    assert host is not None
    addresses = await check_host(host, url.port or 5432, policy, what)
    pinned: str = url.set(host=str(addresses[0])).render_as_string(hide_password=False)
    return pinned


class AdminLookup(Protocol):
    async def is_admin(self, repos: Any, owner: str | None) -> bool: ...


@dataclass(frozen=True)
class OutboundGuard:
    """Builds the policy of a record from its owner: the operator allow-list plus whether the
    owner is an admin (services.privilege.AdminDirectory)."""

    allowed: HostPolicy
    admins: AdminLookup

    async def policy_for(self, repos: Any, owner: str | None) -> OutboundPolicy:
        return OutboundPolicy(self.allowed, await self.admins.is_admin(repos, owner))


__all__ = [
    "METADATA",
    "SETTING",
    "HostPolicy",
    "OutboundGuard",
    "OutboundPolicy",
    "OutboundRefused",
    "PinnedTransport",
    "PinnedTransport2",
    "check_host",
    "check_saved_url",
    "check_url",
    "http_client",
    "is_internal",
    "is_metadata",
    "literal_address",
    "mcp_http_client",
    "pin_pg_uri",
    "pinned_url",
    "resolve_host",
]

"""`TbdAgentsClient`: the synchronous client over httpx, with one attribute per resource."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from tbd_agents import __version__
from tbd_agents.client import resources as r
from tbd_agents.client.errors import TransportError, error_from_response

USER_AGENT = f"tbd-agents-python/{__version__}"


def split_base_url(base_url: str) -> tuple[str, str]:
    """(server root, API root): `http://h:8000` and `http://h:8000/api` both give
    (`http://h:8000`, `http://h:8000/api`)."""
    value = base_url.strip().rstrip("/")
    if not value:
        raise ValueError("base_url must not be empty")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https:// (got {base_url!r})")
    root = value.removesuffix("/api")
    return root, f"{root}/api"


class TbdAgentsClient:
    """A client of the TBD Agents REST API.

    `base_url` is the server (with or without `/api`), `token` an API key sent as
    `Authorization: Bearer`. `transport` lets tests (or proxies) plug an httpx transport in.
    Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None = None,
        timeout: float | httpx.Timeout | None = 30.0,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_base_url = split_base_url(base_url)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token is not None and token.strip():
            headers["Authorization"] = f"Bearer {token.strip()}"
        headers.update(default_headers or {})
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

        self.health = r.HealthResource(self)
        self.agents = r.AgentsResource(self)
        self.skills = r.SkillsResource(self)
        self.mcps = r.McpsResource(self)
        self.knowledge_sources = r.KnowledgeSourcesResource(self)
        self.knowledge_items = r.KnowledgeItemsResource(self)
        self.workflows = r.WorkflowsResource(self)
        self.tasks = r.TasksResource(self)
        self.providers = r.ProvidersResource(self)
        self.tokens = r.TokensResource(self)
        self.models = r.ModelsResource(self)
        self.chat = r.ChatResource(self)
        self.memories = r.MemoriesResource(self)
        self.guardrails = r.GuardrailsResource(self)
        self.scheduled_agents = r.ScheduledAgentsResource(self)
        self.custom_tools = r.CustomToolsResource(self)
        self.export_import = r.ExportImportResource(self)

    def __enter__(self) -> TbdAgentsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _url(self, path: str, *, api: bool) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.api_base_url if api else self.base_url}/{path.lstrip('/')}"

    _build_url = _url  # the official SDK's name

    @staticmethod
    def raise_for_status(response: httpx.Response) -> None:
        """Raise `ApiError` for a status of 400 or more (a streamed body is read first)."""
        if response.status_code < 400:
            return
        if not response.is_stream_consumed:
            response.read()
        raise error_from_response(response)

    def raw_request(
        self, method: str, path: str, *, api: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """The HTTP response as it is (no status check); `TransportError` when unreachable."""
        try:
            return self._client.request(method, self._url(path, api=api), **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}", cause=exc) from exc

    def request(self, method: str, path: str, *, api: bool = True, **kwargs: Any) -> Any:
        """Send a request to `/api<path>` (`api=False`: to `<path>` on the server root); the
        decoded JSON answer, the text of a non-JSON one, None for an empty one."""
        response = self.raw_request(method, path, api=api, **kwargs)
        self.raise_for_status(response)
        if response.status_code == 204 or not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    @contextmanager
    def stream(
        self, method: str, path: str, *, api: bool = True, **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (SSE)."""
        try:
            with self._client.stream(method, self._url(path, api=api), **kwargs) as response:
                yield response
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}", cause=exc) from exc

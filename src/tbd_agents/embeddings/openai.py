"""Any OpenAI-compatible `POST {base_url}/embeddings` endpoint (OpenAI, Azure-style proxies,
Ollama, vLLM, LiteLLM, text-embeddings-inference …)."""

from __future__ import annotations

from typing import Any

import httpx

from tbd_agents.domain.models import Provider
from tbd_agents.embeddings.base import BatchedEmbedder, EmbeddingError, EmbeddingSpace


class OpenAICompatibleEmbedder(BatchedEmbedder):
    """Calls `{base_url}/embeddings` with `{"model", "input": [...]}` and a Bearer key."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dimension: int,
        api_key: str | None = None,
        batch_size: int = 64,
        send_dimensions: bool = False,
        timeout: float = 60.0,
        extra_headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(EmbeddingSpace(model, dimension), batch_size)
        self.url = base_url.rstrip("/") + "/embeddings"
        headers = dict(extra_headers or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._send_dimensions = send_dimensions
        self._client = client or httpx.AsyncClient(timeout=timeout)

    @classmethod
    async def connect(
        cls,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 64,
        request_timeout: float = 60.0,
        extra_headers: dict[str, str] | None = None,
    ) -> OpenAICompatibleEmbedder:
        """An embedder for the endpoint; with no `dimension`, one probe call finds the size."""
        embedder = cls(
            base_url=base_url,
            model=model,
            dimension=dimension or 1,
            api_key=api_key,
            batch_size=batch_size,
            send_dimensions=dimension is not None,
            timeout=request_timeout,
            extra_headers=extra_headers,
        )
        if dimension is None:
            (probe,) = await embedder._embed_batch(["dimension probe"])
            embedder._space = EmbeddingSpace(model, len(probe))
        return embedder

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.space.model, "input": texts}
        if self._send_dimensions:
            body["dimensions"] = self.space.dimension
        try:
            response = await self._client.post(self.url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise EmbeddingError(
                f"embedding endpoint {self.url} is unreachable ({exc.__class__.__name__}: {exc}): "
                "check EMBEDDING_BASE_URL or the provider's base_url"
            ) from exc
        if response.status_code in (401, 403):
            raise EmbeddingError(
                f"embedding endpoint {self.url} refused the credentials (HTTP "
                f"{response.status_code}): check the API key / token of the provider"
            )
        if response.status_code >= 400:
            raise EmbeddingError(
                f"embedding endpoint {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda d: d.get("index", 0))
            return [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embedding endpoint {self.url} returned an unexpected body: {response.text[:300]}"
            ) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


async def embedder_from_provider(
    provider: Provider,
    api_key: str | None,
    *,
    model: str,
    dimension: int | None = None,
    batch_size: int = 64,
) -> OpenAICompatibleEmbedder:
    """An embedder for a stored provider record; `api_key` is its decrypted token (or None when
    the provider's auth_type is `none`)."""
    if not provider.base_url:
        raise EmbeddingError(
            f"provider {provider.name!r} has no base_url: set it to the API root (…/v1)"
        )
    return await OpenAICompatibleEmbedder.connect(
        base_url=provider.base_url,
        model=model,
        api_key=api_key,
        dimension=dimension,
        batch_size=batch_size,
        extra_headers=provider.extra_headers,
    )

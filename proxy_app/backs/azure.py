"""The `azure` provider kind: Azure OpenAI (`api-key` header, deployments, `api-version`).

Two URL forms, chosen by the provider's `server_url`:

- the resource endpoint (`https://{resource}.openai.azure.com`): chat, embeddings and
  completions go to `/openai/deployments/{deployment}/…?api-version=…`, Responses to
  `/openai/responses?api-version=…`; the model's upstream name is the deployment;
- the v1 surface (a URL ending in `/openai/v1`): OpenAI's paths under it, the deployment
  in the body's `model`, `api-version` only when the provider sets one.

Bodies, replies and streams are OpenAI's, so they pass through as the `openai` kind's do.
Azure's content filters answer a filtered completion with `finish_reason: content_filter`
(passed on) and a filtered prompt with HTTP 400 `content_filter`, whose error names the
categories that tripped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from proxy_app.backs.base import UpstreamCall, UpstreamFault
from proxy_app.backs.openai import PATHS, OpenAIAdapter, OpenAIStream
from proxy_app.config import ProviderCfg
from proxy_app.errors import upstream_error_body
from proxy_app.hub import TokenUsage

# The newest GA data-plane version, and the first that has the Responses API (preview).
DEFAULT_API_VERSION = "2024-10-21"
RESPONSES_API_VERSION = "2025-04-01-preview"


def is_v1(base_url: str) -> bool:
    """Whether the provider URL is the `/openai/v1` surface."""
    return base_url.rstrip("/").endswith("/openai/v1")


def azure_url(provider: ProviderCfg, api: str, deployment: str) -> str:
    """The request URL of `api` for `deployment` on this provider."""
    base = provider.base_url.rstrip("/")
    if is_v1(base):
        query = f"?api-version={quote(provider.api_version, safe='')}" if provider.api_version else ""
        return base + PATHS[api] + query
    base = base.removesuffix("/openai")
    version = provider.api_version or (RESPONSES_API_VERSION if api == "responses" else DEFAULT_API_VERSION)
    query = f"?api-version={quote(version, safe='')}"
    if api == "responses":
        return f"{base}/openai/responses{query}"
    return f"{base}/openai/deployments/{quote(deployment, safe='')}{PATHS[api]}{query}"


class AzureAdapter:
    """Azure OpenAI Service."""

    kind = "azure"
    native_apis = frozenset(PATHS)
    translated_apis: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._openai = OpenAIAdapter()  # the wire format once addressed

    def build(self, provider: ProviderCfg, api: str, body: dict[str, Any], upstream_model: str,
              stream: bool, client_headers: Mapping[str, str]) -> UpstreamCall:
        """POST the body (its model the deployment) to the deployment's URL with the `api-key` header."""
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        if provider.server_key:
            headers["api-key"] = provider.server_key
        return UpstreamCall("POST", azure_url(provider, api, upstream_model), headers,
                            orjson.dumps({**body, "model": upstream_model}))

    def decode_reply(self, api: str, raw: bytes, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """As the openai kind: the reply object (of embeddings, its usage only)."""
        return self._openai.decode_reply(api, raw, request)

    def stream_decoder(self, api: str) -> OpenAIStream:
        """As the openai kind (Azure's first chunk, `prompt_filter_results` with no choices, passes through)."""
        return self._openai.stream_decoder(api)

    def usage(self, obj: dict[str, Any]) -> TokenUsage | None:
        """As the openai kind."""
        return self._openai.usage(obj)

    def fault(self, obj: dict[str, Any]) -> UpstreamFault | None:
        """As the openai kind."""
        return self._openai.fault(obj)

    def error_body(self, status: int, raw: bytes, provider: ProviderCfg) -> bytes:
        """Azure's error, which is OpenAI-shaped; a content-filter refusal says which categories tripped."""
        body = upstream_error_body(status, raw, provider.name, provider.server_key)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict) or error.get("code") != "content_filter":
            return body
        tripped = _tripped(error)
        if tripped:
            error = {**error, "message": f"Azure's content filter refused the prompt ({', '.join(tripped)}). "
                                         + str(error.get("message") or "")}
        return orjson.dumps({"error": {**error, "type": error.get("type") or "content_filter"}})


def _tripped(error: Mapping[str, Any]) -> list[str]:
    """The filter categories marked `filtered` in an error's `innererror.content_filter_result`."""
    inner = error.get("innererror")
    result = inner.get("content_filter_result") if isinstance(inner, dict) else None
    if not isinstance(result, dict):
        return []
    return [name for name, verdict in result.items() if isinstance(verdict, dict) and verdict.get("filtered")]

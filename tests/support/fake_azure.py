"""A fake Azure OpenAI resource, from Microsoft's data-plane reference, on the fake upstream's machinery.

Routes: `/openai/deployments/{deployment}/{chat/completions,embeddings,completions}` and
`/openai/responses` with a required `api-version` query, and the `/openai/v1/...` surface
without one. Every route wants the `api-key` header (401 otherwise, in Azure's error
shape). Streams start with Azure's `prompt_filter_results` chunk (no choices); replies
carry `prompt_filter_results` and `content_filter_results`. Scenarios pick behaviour by
deployment name (deployment URLs) or body `model` (v1 and Responses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.fake_upstream import FakeUpstream, Seen

FILTER_RESULTS = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")}
PROMPT_FILTER_CHUNK = b"data: " + json.dumps({
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}],
}).encode() + b"\n\n"


def content_filter_error(category: str = "violence") -> dict[str, Any]:
    """Azure's 400 for a prompt its filter refused."""
    verdicts = {**FILTER_RESULTS, category: {"filtered": True, "severity": "high"}}
    return {"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": verdicts},
    }}


@dataclass
class AzureCall:
    """One request: its path, query and `api-key` header."""

    path: str
    query: dict[str, str]
    api_key: str | None


@dataclass
class FakeAzure(FakeUpstream):
    """Start with `start()`; `endpoint` is the resource URL (no path), `v1_url` its /openai/v1 surface."""

    calls: list[AzureCall] = field(default_factory=list)
    endpoint: str = ""
    v1_url: str = ""

    async def _start(self) -> None:
        app = web.Application()
        for path in ("chat/completions", "embeddings", "completions"):
            app.router.add_post(f"/openai/deployments/{{deployment}}/{path}", self._deployment)
            app.router.add_post(f"/openai/v1/{path}", self._v1)
        app.router.add_post("/openai/responses", self._deployment)
        app.router.add_post("/openai/v1/responses", self._v1)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.v1_url = self.endpoint + "/openai/v1"
        self.base_url = self.endpoint

    def _refused(self, request: web.Request, needs_version: bool) -> web.Response | None:
        with self._lock:
            self.calls.append(AzureCall(request.path, dict(request.query), request.headers.get("api-key")))
        if not request.headers.get("api-key") or "Authorization" in request.headers:
            return web.json_response({"error": {"code": "401", "message": (
                "Access denied due to invalid subscription key or wrong API endpoint.")}}, status=401)
        if needs_version and not request.query.get("api-version"):
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        return None

    async def _deployment(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request, needs_version=True)
        if refused is not None:
            return refused
        body = await request.json()
        if "deployment" in request.match_info:
            body = {**body, "model": request.match_info["deployment"]}  # the URL names the model
        return await self._serve(request, body)

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request, needs_version=False)
        if refused is not None:
            return refused
        return await self._serve(request, await request.json())

    async def _serve(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        kind = request.path.rsplit("/", 1)[-1]
        if request.path.endswith("chat/completions"):
            with self._lock:  # the other handlers record what they are handed themselves
                self.requests.append(Seen(request.path, dict(request.headers), body))
            return await self._filtered_chat(request, body)
        if kind == "embeddings":
            return await self._embeddings_of(request, body)
        if kind == "responses":
            return await self._responses_of(request, body)
        return await self._completions_of(request, body)

    async def _filtered_chat(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Chat as the openai fake answers it, with Azure's filter annotations."""
        if body.get("stream"):
            return await self._answer(request, body, preamble=PROMPT_FILTER_CHUNK)
        response = await self._answer(request, body)
        if isinstance(response, web.Response) and response.status == 200 and response.body:
            reply = json.loads(response.body)  # type: ignore[arg-type]
            reply["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}]
            for choice in reply["choices"]:
                choice["content_filter_results"] = FILTER_RESULTS
            return web.json_response(reply)
        return response

    # The openai fake's handlers read the body from the request; these hand it the rewritten one.
    async def _embeddings_of(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await self._embeddings(_Replayed(body, request))  # type: ignore[arg-type]

    async def _responses_of(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await self._responses(_Replayed(body, request))  # type: ignore[arg-type]

    async def _completions_of(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await self._completions(_Replayed(body, request))  # type: ignore[arg-type]


class _Replayed:
    """A request whose JSON body is given (the deployment put into `model`); the rest is the real one's."""

    def __init__(self, body: dict[str, Any], request: web.Request) -> None:
        self._body = body
        self._request = request
        self.path = request.path
        self.headers = request.headers

    async def json(self) -> dict[str, Any]:
        return self._body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

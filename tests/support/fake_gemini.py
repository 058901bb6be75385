"""A fake Gemini API, from Google's API reference (generateContent, streaming, embeddings), on aiohttp.

`POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
`:embedContent` and `:batchEmbedContents`, authenticated by `x-goog-api-key` (Google's
400 `API_KEY_INVALID` otherwise). Replies use `candidates[].content.parts` (text, thought
text, functionCall), `finishReason`, `promptFeedback.blockReason` and `usageMetadata`
(promptTokenCount, candidatesTokenCount, cachedContentTokenCount, thoughtsTokenCount,
totalTokenCount). Errors are `{"error": {"code", "message", "status"}}`. Behaviour comes
from the shared `Scenario`s, by model name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.fake_upstream import FakeUpstream, Scenario, Seen

STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}


def gemini_error(status: int, message: str) -> web.Response:
    """Google's error body."""
    return web.json_response({"error": {"code": status, "message": message,
                                         "status": STATUS_NAMES.get(status, "UNKNOWN")}}, status=status)


@dataclass
class FakeGemini(FakeUpstream):
    """Start with `start()`; `base_url` is the server root (the provider URL as Google documents it)."""

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{version}/models/{call}", self._call)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def _call(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path_qs, dict(request.headers), body))
        if request.match_info["version"] not in ("v1", "v1beta"):
            return gemini_error(404, "Not found.")
        if not request.headers.get("x-goog-api-key"):
            return gemini_error(400, "API key not valid. Please pass a valid API key.")
        model, _, method = request.match_info["call"].partition(":")
        sc = self.scenario(model)
        if sc.status >= 400:
            if sc.error_body is not None:
                return web.json_response(sc.error_body, status=sc.status, headers=sc.error_headers)
            return gemini_error(sc.status, f"fake failure {sc.status}")
        if method == "generateContent":
            return web.json_response(self._reply(sc, model, body))
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return gemini_error(400, "this fake streams as SSE only (alt=sse)")
            return await self._stream(request, sc, model, body)
        if method == "embedContent":
            return web.json_response({"embedding": self._vector(0, body)})
        if method == "batchEmbedContents":
            requests = body.get("requests") or []
            if any(r.get("model") != f"models/{model}" for r in requests):
                return gemini_error(400, "Each request's model must be the batch's model.")
            return web.json_response({"embeddings": [self._vector(i, r) for i, r in enumerate(requests)]})
        return gemini_error(404, f"Method {method} not found.")

    @staticmethod
    def _vector(index: int, request: dict[str, Any]) -> dict[str, Any]:
        size = int(request.get("outputDimensionality") or 8)
        return {"values": [round((index + 1) * 0.001 * (k + 1), 6) for k in range(size)]}

    @staticmethod
    def _usage(sc: Scenario, output: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": sc.prompt_tokens, "candidatesTokenCount": output,
                                 "totalTokenCount": sc.prompt_tokens + output + sc.reasoning_tokens}
        if sc.cached_tokens:
            usage["cachedContentTokenCount"] = sc.cached_tokens
        if sc.reasoning_tokens:
            usage["thoughtsTokenCount"] = sc.reasoning_tokens
        return usage

    def _parts(self, sc: Scenario) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if sc.reasoning:
            parts.append({"text": sc.reasoning, "thought": True})
        if sc.reply:
            parts.append({"text": sc.reply})
        for name, args in sc.tool_calls:
            parts.append({"functionCall": {"name": name, "args": json.loads(args)}})
        return parts

    def _reply(self, sc: Scenario, model: str, body: dict[str, Any]) -> dict[str, Any]:
        output = sc.completion_tokens if sc.completion_tokens is not None else len(sc.pieces())
        base = {"modelVersion": model, "responseId": "resp-fake"}
        if sc.safety_block == "prompt":
            return {**base, "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
                "usageMetadata": {"promptTokenCount": sc.prompt_tokens, "totalTokenCount": sc.prompt_tokens}}
        if sc.safety_block == "answer":
            return {**base, "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]}],
                "usageMetadata": self._usage(sc, 0)}
        finish = "MAX_TOKENS" if sc.finish_reason == "length" else "STOP"
        return {**base, "candidates": [{"content": {"role": "model", "parts": self._parts(sc)},
                                        "finishReason": finish, "index": 0}],
                "usageMetadata": self._usage(sc, output)}

    async def _stream(self, request: web.Request, sc: Scenario, model: str,
                      body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\r\n\r\n")  # as Google frames them

        base = {"modelVersion": model, "responseId": "resp-fake"}
        if sc.safety_block:
            await event(self._reply(sc, model, body))
            await resp.write_eof()
            return resp
        pieces = sc.pieces() if sc.reply else []
        output = sc.completion_tokens if sc.completion_tokens is not None else len(pieces)
        if sc.reasoning:
            await event({**base, "candidates": [{"content": {"role": "model", "parts": [
                {"text": sc.reasoning, "thought": True}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": sc.prompt_tokens}})
        for i, piece in enumerate(pieces):
            if sc.break_after_chunks is not None and i >= sc.break_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if sc.error_after_chunks is not None and i >= sc.error_after_chunks:
                await event({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
                await resp.write_eof()
                return resp
            await event({**base, "candidates": [{"content": {"role": "model", "parts": [{"text": piece}]},
                                                 "index": 0}],
                         "usageMetadata": {"promptTokenCount": sc.prompt_tokens}})
        calls = [{"functionCall": {"name": n, "args": json.loads(a)}} for n, a in sc.tool_calls]
        finish = "MAX_TOKENS" if sc.finish_reason == "length" else "STOP"
        await event({**base, "candidates": [{"content": {"role": "model", "parts": calls or [{"text": ""}]},
                                             "finishReason": finish, "index": 0}],
                     "usageMetadata": self._usage(sc, output)})
        await resp.write_eof()
        return resp

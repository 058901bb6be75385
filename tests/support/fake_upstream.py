"""A fake upstream, built with aiohttp, running on its own thread: OpenAI's APIs and Anthropic's Messages.

Behaviour is chosen per upstream model name through `Scenario`s, so one fake
server can play a healthy provider, a slow one, a failing one, and so on. It
records every request it receives and counts requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_REPLY = "Hello from the fake upstream, my friend."


@dataclass
class Scenario:
    """How the fake answers one upstream model."""

    reply: str = DEFAULT_REPLY
    status: int = 200
    error_body: Any = None  # JSON (dict) or text (str) for status >= 400
    report_usage: bool = True
    prompt_tokens: int = 17
    completion_tokens: int | None = None  # default: number of chunks
    cached_tokens: int = 0  # of prompt_tokens, reported in prompt_tokens_details
    reasoning_tokens: int = 0  # of completion_tokens, reported in completion_tokens_details
    delay_s: float = 0.0  # before the response headers
    first_chunk_pause_s: float = 0.0  # after the first content chunk
    chunk_delay_s: float = 0.0  # between the other chunks
    usage_in_last_content_chunk: bool = False
    break_after_chunks: int | None = None  # drop the connection mid-stream
    error_after_chunks: int | None = None  # send an OpenAI error event mid-stream, then end
    linger_after_done_s: float = 0.0  # keep the stream open after [DONE] before ending it
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments) after the text
    reasoning: str = ""  # reasoning text before the reply (as DeepSeek's `reasoning_content`)
    cache_write_tokens: int = 0  # Anthropic's cache_creation_input_tokens (its /v1/messages only)
    error_headers: dict[str, str] = field(default_factory=dict)  # with status >= 400 (Retry-After, say)
    finish_reason: str | None = None  # in place of stop/tool_calls (e.g. Azure's content_filter)
    safety_block: str | None = None  # Gemini: "prompt" (promptFeedback.blockReason) or "answer" (SAFETY finish)

    def pieces(self) -> list[str]:
        """The reply split into stream chunks (word by word, spaces kept)."""
        words = self.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """Start with `start()`; `base_url` then ends in `/v1`."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)
    default: Scenario = field(default_factory=Scenario)
    requests: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    base_url: str = ""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    def scenario(self, model: str) -> Scenario:
        """The scenario for an upstream model name."""
        return self.scenarios.get(model, self.default)

    def start(self) -> FakeUpstream:
        """Serve on 127.0.0.1 on a free port."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def chat_requests(self) -> list[Seen]:
        """The chat requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received on one path (e.g. "/v1/embeddings")."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's embeddings reply: one vector per input, float or base64, `dimensions` honoured."""
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body))
        sc = self.scenario(body.get("model", ""))
        if sc.delay_s:
            await asyncio.sleep(sc.delay_s)
        if sc.status >= 400:
            return web.json_response({"error": {"message": f"fake failure {sc.status}", "type": "server_error",
                                                "param": None, "code": None}}, status=sc.status)
        inputs = body["input"]
        items = [inputs] if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else inputs
        size = int(body.get("dimensions") or 8)
        data = []
        for index in range(len(items)):
            vector = [round((index + 1) * 0.001 * (k + 1), 6) for k in range(size)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                import base64
                import struct

                embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        reply: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if sc.report_usage:
            reply["usage"] = {"prompt_tokens": sc.prompt_tokens, "total_tokens": sc.prompt_tokens}
        return web.json_response(reply)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's legacy completions: a text_completion, or its stream with a usage chunk on request."""
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body))
        sc = self.scenario(body.get("model", ""))
        if sc.status >= 400:
            return web.json_response({"error": {"message": f"fake failure {sc.status}", "type": "server_error",
                                                "param": None, "code": None}}, status=sc.status)
        pieces = sc.pieces()
        completion = sc.completion_tokens if sc.completion_tokens is not None else len(pieces)
        usage = {"prompt_tokens": sc.prompt_tokens, "completion_tokens": completion,
                 "total_tokens": sc.prompt_tokens + completion}
        base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model")}
        if not body.get("stream"):
            reply: dict[str, Any] = {**base, "choices": [
                {"text": sc.reply, "index": 0, "logprobs": None, "finish_reason": "stop"}]}
            if sc.report_usage:
                reply["usage"] = usage
            return web.json_response(reply)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, piece in enumerate(pieces):
            finish = "stop" if i == len(pieces) - 1 else None
            chunk = {**base, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if sc.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        except asyncio.CancelledError:
            with self._lock:
                self.cancelled += 1
            raise
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any], preamble: bytes = b"") -> web.StreamResponse:
        sc = self.scenario(body.get("model", ""))
        if sc.delay_s:
            await asyncio.sleep(sc.delay_s)
        if sc.status >= 400:
            if isinstance(sc.error_body, str):
                return web.Response(status=sc.status, text=sc.error_body, headers=sc.error_headers)
            payload = sc.error_body or {"error": {
                "message": f"fake failure {sc.status}", "type": "server_error", "param": None, "code": None,
            }}
            return web.json_response(payload, status=sc.status, headers=sc.error_headers)
        pieces = sc.pieces()
        completion = sc.completion_tokens if sc.completion_tokens is not None else len(pieces)
        usage: dict[str, Any] = {"prompt_tokens": sc.prompt_tokens, "completion_tokens": completion,
                                 "total_tokens": sc.prompt_tokens + completion}
        if sc.cached_tokens:  # as OpenAI reports prompt caching and reasoning
            usage["prompt_tokens_details"] = {"cached_tokens": sc.cached_tokens, "audio_tokens": 0}
        if sc.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": sc.reasoning_tokens, "audio_tokens": 0}
        created = int(time.time())
        cid = "chatcmpl-fake"
        finish = sc.finish_reason or ("tool_calls" if sc.tool_calls else "stop")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": sc.reply or None}
            if sc.reasoning:
                message["reasoning_content"] = sc.reasoning
            if sc.tool_calls:
                message["tool_calls"] = [
                    {"id": f"call_fake_{n}", "type": "function", "function": {"name": name, "arguments": args}}
                    for n, (name, args) in enumerate(sc.tool_calls)
                ]
            reply: dict[str, Any] = {
                "id": cid, "object": "chat.completion", "created": created, "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            }
            if sc.report_usage:
                reply["usage"] = usage
            return web.json_response(reply)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and sc.report_usage
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None, with_usage: bool = False) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                   "model": body.get("model"),
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if with_usage:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        if preamble:
            await resp.write(preamble)
        await resp.write(chunk({"role": "assistant", "content": ""}))
        if sc.reasoning:
            for word in sc.reasoning.split(" "):
                await resp.write(chunk({"reasoning_content": word + " "}))
        for i, piece in enumerate(pieces if sc.reply else ()):
            if sc.break_after_chunks is not None and i >= sc.break_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if sc.error_after_chunks is not None and i >= sc.error_after_chunks:
                error = {"error": {"message": "model overloaded mid-stream", "type": "server_error",
                                   "param": None, "code": "overloaded"}}
                await resp.write(b"data: " + json.dumps(error).encode() + b"\n\n")
                await resp.write_eof()
                return resp
            await resp.write(chunk({"content": piece}))
            if i == 0 and sc.first_chunk_pause_s:
                await asyncio.sleep(sc.first_chunk_pause_s)
            elif sc.chunk_delay_s:
                await asyncio.sleep(sc.chunk_delay_s)
        for n, (name, args) in enumerate(sc.tool_calls):
            # As OpenAI streams a call: id and name first, then the arguments in fragments.
            await resp.write(chunk({"tool_calls": [{"index": n, "id": f"call_fake_{n}", "type": "function",
                                                    "function": {"name": name, "arguments": ""}}]}))
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                await resp.write(chunk({"tool_calls": [{"index": n, "function": {"arguments": part}}]}))
        last_with_usage = include_usage and sc.usage_in_last_content_chunk
        await resp.write(chunk({}, finish, with_usage=last_with_usage))
        if include_usage and not sc.usage_in_last_content_chunk:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": body.get("model"), "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        if sc.linger_after_done_s:
            await asyncio.sleep(sc.linger_after_done_s)
        await resp.write_eof()
        return resp

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API as OpenAI's reference shows it: a Response object, or typed SSE events."""
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body))
        sc = self.scenario(body.get("model", ""))
        if sc.status >= 400:
            payload = sc.error_body or {"error": {"message": f"fake failure {sc.status}", "type": "server_error",
                                                  "param": None, "code": None}}
            return web.json_response(payload, status=sc.status)
        pieces = sc.pieces() if sc.reply else []
        completion = sc.completion_tokens if sc.completion_tokens is not None else len(pieces)
        usage = {"input_tokens": sc.prompt_tokens, "input_tokens_details": {"cached_tokens": sc.cached_tokens},
                 "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": sc.reasoning_tokens},
                 "total_tokens": sc.prompt_tokens + completion}
        message = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": sc.reply, "annotations": []}]}
        calls = [{"type": "function_call", "id": f"fc_fake_{n}", "call_id": f"call_fake_{n}", "name": name,
                  "arguments": args, "status": "completed"} for n, (name, args) in enumerate(sc.tool_calls)]
        output = ([message] if sc.reply else []) + calls

        def response(status: str, with_output: bool) -> dict[str, Any]:
            return {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": status,
                    "model": body.get("model"), "output": output if with_output else [],
                    "usage": usage if with_output and sc.report_usage else None, "error": None,
                    "instructions": body.get("instructions"), "tools": body.get("tools") or [],
                    "tool_choice": body.get("tool_choice", "auto"), "parallel_tool_calls": True}

        if not body.get("stream"):
            return web.json_response(response("completed", True))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        sequence = 0

        async def event(kind: str, **fields: Any) -> None:
            nonlocal sequence
            data = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        await event("response.created", response=response("in_progress", False))
        await event("response.in_progress", response=response("in_progress", False))
        if sc.reply:
            await event("response.output_item.added", output_index=0,
                        item={**message, "status": "in_progress", "content": []})
            await event("response.content_part.added", item_id="msg_fake", output_index=0, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})
            for i, piece in enumerate(pieces):
                if sc.break_after_chunks is not None and i >= sc.break_after_chunks:
                    request.transport.close()  # type: ignore[union-attr]
                    return resp
                if sc.error_after_chunks is not None and i >= sc.error_after_chunks:
                    failed = {**response("failed", False),
                              "error": {"code": "server_error", "message": "model overloaded mid-stream"}}
                    await event("response.failed", response=failed)
                    await resp.write_eof()
                    return resp
                await event("response.output_text.delta", item_id="msg_fake", output_index=0, content_index=0,
                            delta=piece)
            await event("response.output_text.done", item_id="msg_fake", output_index=0, content_index=0,
                        text=sc.reply)
            await event("response.content_part.done", item_id="msg_fake", output_index=0, content_index=0,
                        part=message["content"][0])
            await event("response.output_item.done", output_index=0, item=message)
        for n, call in enumerate(calls):
            index = n + (1 if sc.reply else 0)
            await event("response.output_item.added", output_index=index,
                        item={**call, "arguments": "", "status": "in_progress"})
            await event("response.function_call_arguments.delta", item_id=call["id"], output_index=index,
                        delta=call["arguments"])
            await event("response.function_call_arguments.done", item_id=call["id"], output_index=index,
                        arguments=call["arguments"])
            await event("response.output_item.done", output_index=index, item=call)
        await event("response.completed", response=response("completed", True))
        await resp.write_eof()
        return resp

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API as its reference shows it: a message, or its SSE events."""
        body = await request.json()
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body))
        if "x-api-key" not in request.headers:
            return web.json_response({"type": "error", "error": {
                "type": "authentication_error", "message": "x-api-key header is required"}}, status=401)
        if "anthropic-version" not in request.headers or not isinstance(body.get("max_tokens"), int):
            return web.json_response({"type": "error", "error": {
                "type": "invalid_request_error", "message": "anthropic-version and max_tokens are required"}},
                status=400)
        sc = self.scenario(body.get("model", ""))
        if sc.status >= 400:
            payload = sc.error_body or {"type": "error", "error": {"type": "overloaded_error",
                                                                     "message": "Overloaded"}}
            return web.json_response(payload, status=sc.status)
        pieces = sc.pieces() if sc.reply else []
        output = sc.completion_tokens if sc.completion_tokens is not None else len(pieces)
        uncached = max(0, sc.prompt_tokens - sc.cached_tokens - sc.cache_write_tokens)
        usage = {"input_tokens": uncached, "cache_creation_input_tokens": sc.cache_write_tokens,
                 "cache_read_input_tokens": sc.cached_tokens, "output_tokens": output}
        content: list[dict[str, Any]] = []
        if sc.reasoning:
            content.append({"type": "thinking", "thinking": sc.reasoning, "signature": "sig-fake"})
        if sc.reply:
            content.append({"type": "text", "text": sc.reply})
        for n, (name, args) in enumerate(sc.tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_fake_{n}", "name": name, "input": json.loads(args)})
        stop = "tool_use" if sc.tool_calls else "end_turn"
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return web.json_response(message)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def event(kind: str, **fields: Any) -> None:
            await resp.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode())

        await event("message_start", message={**message, "content": [], "stop_reason": None,
                                              "usage": {**usage, "output_tokens": 1}})
        await event("ping")
        for index, block in enumerate(content):
            if block["type"] == "text":
                await event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                for i, piece in enumerate(pieces):
                    if sc.break_after_chunks is not None and i >= sc.break_after_chunks:
                        request.transport.close()  # type: ignore[union-attr]
                        return resp
                    if sc.error_after_chunks is not None and i >= sc.error_after_chunks:
                        await event("error", error={"type": "overloaded_error", "message": "Overloaded"})
                        await resp.write_eof()
                        return resp
                    await event("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
            elif block["type"] == "thinking":
                await event("content_block_start", index=index,
                            content_block={"type": "thinking", "thinking": "", "signature": ""})
                await event("content_block_delta", index=index,
                            delta={"type": "thinking_delta", "thinking": block["thinking"]})
                await event("content_block_delta", index=index,
                            delta={"type": "signature_delta", "signature": block["signature"]})
            else:
                await event("content_block_start", index=index, content_block={**block, "input": {}})
                raw = json.dumps(block["input"])
                for part in (raw[:len(raw) // 2], raw[len(raw) // 2:]):
                    await event("content_block_delta", index=index,
                                delta={"type": "input_json_delta", "partial_json": part})
            await event("content_block_stop", index=index)
        await event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                    usage={"output_tokens": output})
        await event("message_stop")
        await resp.write_eof()
        return resp

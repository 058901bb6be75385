"""A fast OpenAI-compatible mock upstream for benchmarks (aiohttp, own process).

    python -m bench.mock_upstream --port 0 --latency-ms 0 --chunks 16 --chunk-delay-ms 1

POST /v1/chat/completions answers a fixed reply: JSON, or for `"stream": true`
an SSE stream of a role chunk, `--chunks` content chunks (`--chunk-delay-ms`
apart), a finish chunk, a usage chunk when `stream_options.include_usage` is
set, and `data: [DONE]`. `--latency-ms` passes before the response headers.
A model whose name ends in `-nousage` never reports usage (the proxy then
counts tokens itself). GET /stats returns `{"chat_requests": n}`: every chat
request received, so a harness can check one upstream call per client call.
Prints `mock upstream listening on <port>` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

CREATED = 1_700_000_000
WORDS = ("Hello", " from", " the", " benchmark", " mock", " upstream", ",", " friend", ".")


@dataclass
class MockConfig:
    """How the mock answers."""

    latency_s: float = 0.0
    chunks: int = 16
    chunk_delay_s: float = 0.0
    prompt_tokens: int = 12


class MockUpstream:
    """Pre-serialised replies, cached per model name, and a request counter."""

    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.chat_requests = 0
        self._json: dict[str, bytes] = {}
        self._stream: dict[str, tuple[list[bytes], bytes, bytes]] = {}
        self._pieces = [WORDS[i % len(WORDS)] for i in range(cfg.chunks)]
        self._embedding: bytes | None = None
        self._responses: dict[str, list[bytes]] = {}
        self._messages: dict[str, list[bytes]] = {}
        self._gemini: dict[tuple[str, bool], list[bytes]] = {}

    def _usage(self) -> dict[str, int]:
        completion = self.cfg.chunks
        return {"prompt_tokens": self.cfg.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.cfg.prompt_tokens + completion}

    def json_reply(self, model: str) -> bytes:
        """The whole non-stream reply for `model`."""
        body = self._json.get(model)
        if body is None:
            reply: dict[str, Any] = {
                "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self._pieces)},
                             "finish_reason": "stop"}],
            }
            if not model.endswith("-nousage"):
                reply["usage"] = self._usage()
            body = self._json[model] = orjson.dumps(reply)
        return body

    def stream_events(self, model: str) -> tuple[list[bytes], bytes, bytes]:
        """(role + content events, finish event, usage event) for `model`."""
        cached = self._stream.get(model)
        if cached is None:
            def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
                obj = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                return b"data: " + orjson.dumps(obj) + b"\n\n"

            head = [event({"role": "assistant", "content": ""})] + [event({"content": p}) for p in self._pieces]
            usage = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
                     "model": model, "choices": [], "usage": self._usage()}
            cached = self._stream[model] = (head, event({}, "stop"), b"data: " + orjson.dumps(usage) + b"\n\n")
        return cached

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """Answer one chat completion."""
        self.chat_requests += 1
        body = orjson.loads(await request.read())
        model = str(body.get("model", ""))
        if self.cfg.latency_s:
            await asyncio.sleep(self.cfg.latency_s)
        if not body.get("stream"):
            return web.Response(body=self.json_reply(model), content_type="application/json")
        options = body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage")) and not model.endswith("-nousage")
        head, finish, usage = self.stream_events(model)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        delay = self.cfg.chunk_delay_s
        last = len(head) - 1
        for i, event in enumerate(head):
            await resp.write(event)
            if delay and 0 < i < last:
                await asyncio.sleep(delay)
        tail = finish + usage if with_usage else finish
        await resp.write(tail + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def responses_events(self, model: str) -> list[bytes]:
        """A streamed Response for `model`, event by event, as OpenAI's reference shows one."""
        cached = self._responses.get(model)
        if cached is None:
            sequence = iter(range(1_000_000))

            def event(kind: str, **fields: Any) -> bytes:
                data = orjson.dumps({"type": kind, "sequence_number": next(sequence), **fields})
                return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

            text = "".join(self._pieces)
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant", "content": [part]}
            usage = self._usage()
            response = {"id": "resp_mock", "object": "response", "created_at": CREATED, "model": model,
                        "status": "in_progress", "output": [], "usage": None}
            cached = [
                event("response.created", response=response),
                event("response.in_progress", response=response),
                event("response.output_item.added", output_index=0, item={**item, "status": "in_progress",
                                                                          "content": []}),
                event("response.content_part.added", item_id="msg_mock", output_index=0, content_index=0,
                      part={**part, "text": ""}),
                *(event("response.output_text.delta", item_id="msg_mock", output_index=0, content_index=0,
                        delta=piece) for piece in self._pieces),
                event("response.output_text.done", item_id="msg_mock", output_index=0, content_index=0, text=text),
                event("response.content_part.done", item_id="msg_mock", output_index=0, content_index=0, part=part),
                event("response.output_item.done", output_index=0, item=item),
                event("response.completed", response={
                    **response, "status": "completed", "output": [item],
                    "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                              "total_tokens": usage["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}),
            ]
            self._responses[model] = cached
        return cached

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """Answer one streamed Responses request natively."""
        self.chat_requests += 1  # one counter: the bench checks one upstream request per client request
        body = orjson.loads(await request.read())
        if self.cfg.latency_s:
            await asyncio.sleep(self.cfg.latency_s)
        events = self.responses_events(str(body.get("model", "")))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        delay = self.cfg.chunk_delay_s
        head, deltas, tail = events[:4], events[4:-4], events[-4:]
        await resp.write(b"".join(head))
        for i, event in enumerate(deltas):
            await resp.write(event)
            if delay and i < len(deltas) - 1:
                await asyncio.sleep(delay)
        await resp.write(b"".join(tail))
        await resp.write_eof()
        return resp

    def messages_events(self, model: str) -> list[bytes]:
        """A streamed Anthropic message for `model`, event by event, as Anthropic's reference shows one."""
        cached = self._messages.get(model)
        if cached is None:
            def event(kind: str, **fields: Any) -> bytes:
                return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"

            usage = self._usage()
            message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                       "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": usage["prompt_tokens"], "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0, "output_tokens": 1}}
            cached = [
                event("message_start", message=message),
                event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                event("ping"),
                *(event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
                  for piece in self._pieces),
                event("content_block_stop", index=0),
                event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                      usage={"output_tokens": usage["completion_tokens"]}),
                event("message_stop"),
            ]
            self._messages[model] = cached
        return cached

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Answer one streamed Messages request, as Anthropic does."""
        self.chat_requests += 1  # one counter: the bench checks one upstream request per client request
        body = orjson.loads(await request.read())
        if self.cfg.latency_s:
            await asyncio.sleep(self.cfg.latency_s)
        events = self.messages_events(str(body.get("model", "")))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        delay = self.cfg.chunk_delay_s
        head, deltas, tail = events[:3], events[3:-3], events[-3:]
        await resp.write(b"".join(head))
        for i, event in enumerate(deltas):
            await resp.write(event)
            if delay and i < len(deltas) - 1:
                await asyncio.sleep(delay)
        await resp.write(b"".join(tail))
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        """Answer one embeddings request: a 1,536-float vector per input, as text-embedding-3-small's."""
        self.chat_requests += 1  # one counter: the bench checks one upstream request per client request
        body = orjson.loads(await request.read())
        if self.cfg.latency_s:
            await asyncio.sleep(self.cfg.latency_s)
        reply = self._embedding
        if reply is None:
            vector = [round(0.001 * (k % 997), 6) for k in range(1536)]
            reply = self._embedding = orjson.dumps({
                "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": body.get("model"), "usage": {"prompt_tokens": 8, "total_tokens": 8},
            })
        return web.Response(body=reply, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        """The request counter."""
        return web.Response(body=orjson.dumps({"chat_requests": self.chat_requests}),
                            content_type="application/json")

    def gemini_reply(self, model: str, stream: bool) -> list[bytes]:
        """A GenerateContentResponse (or its SSE events, one per piece) as Google's reference shows it."""
        cached = self._gemini.get((model, stream))
        if cached is None:
            usage = {"promptTokenCount": self.cfg.prompt_tokens, "candidatesTokenCount": self.cfg.chunks,
                     "totalTokenCount": self.cfg.prompt_tokens + self.cfg.chunks}
            base = {"modelVersion": model, "responseId": "resp-mock"}
            if not stream:
                content = {"role": "model", "parts": [{"text": "".join(self._pieces)}]}
                cached = [orjson.dumps({**base, "usageMetadata": usage,
                                        "candidates": [{"index": 0, "finishReason": "STOP", "content": content}]})]
            else:
                cached = []
                for i, piece in enumerate(self._pieces):
                    last = i == len(self._pieces) - 1
                    candidate: dict[str, Any] = {"index": 0, "content": {"role": "model", "parts": [{"text": piece}]}}
                    if last:
                        candidate["finishReason"] = "STOP"
                    event = {**base, "candidates": [candidate],
                             "usageMetadata": usage if last else {"promptTokenCount": self.cfg.prompt_tokens}}
                    cached.append(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
            self._gemini[(model, stream)] = cached
        return cached

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        """Gemini's `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`."""
        self.chat_requests += 1
        await request.read()
        model, _, method = request.match_info["call"].partition(":")
        if method == "generateContent":
            return web.Response(body=self.gemini_reply(model, False)[0], content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delay = self.cfg.chunk_delay_s
        for event in self.gemini_reply(model, True):
            await resp.write(event)
            if delay:
                await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1beta/models/{call}", self.gemini)
        app.router.add_get("/stats", self.stats)
        return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    args = parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    cfg = MockConfig(latency_s=args.latency_ms / 1000, chunks=args.chunks, chunk_delay_s=args.chunk_delay_ms / 1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(
        MockUpstream(cfg).app(), sock=sock, access_log=None, loop=loop, backlog=1024,
        print=lambda _: print(f"mock upstream listening on {port}", flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

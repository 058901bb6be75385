"""The `gemini` provider kind: Google's Gemini API (`x-goog-api-key`, `models/{model}:generateContent`).

Gemini speaks no client API of ours, so everything is translated. A chat completion
request (and so Responses, Messages and the WebSocket chat, which arrive as chat) becomes
`generateContent` (`streamGenerateContent?alt=sse` when streamed): system instruction,
`user`/`model` turns, images (inline data; URLs as file data), function declarations and
calls ⇄ tools and tool_calls, `generationConfig` (temperature, top_p, top_k, max output
tokens, stop sequences, JSON output). Replies and stream events come back as chat
completions and chunks; safety blocks finish with `content_filter`; `usageMetadata`
(prompt, candidates, cached content, thoughts) is the usage. Embeddings requests become
`embedContent` (one input) or `batchEmbedContents` (several).
"""

from __future__ import annotations

import base64
import mimetypes
import struct
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from proxy_app.backs.base import UpstreamCall, UpstreamFault
from proxy_app.backs.chat_reading import as_dict as _dict
from proxy_app.backs.chat_reading import message_text as _text
from proxy_app.backs.chat_reading import positive_int as _int
from proxy_app.backs.chat_reading import user_parts
from proxy_app.backs.sse import SseSplitter, parse_event
from proxy_app.config import ProviderCfg
from proxy_app.errors import ProxyError, upstream_error_body
from proxy_app.hub import Piece, TokenUsage

DEFAULT_VERSION = "v1beta"  # the surface with system instructions, JSON schemas and thoughts
FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter",
}
_DONE = b"data: [DONE]\n\n"
_CHUNK_TAIL = b',"finish_reason":null}]}\n\n'  # a chunk's bytes after its delta


def api_base(provider: ProviderCfg) -> str:
    """`{server_url}/{version}`, unless the URL already names a version (…/v1beta, …/v1)."""
    base = provider.base_url
    last = base.rsplit("/", 1)[-1]
    if last in ("v1", "v1beta", "v1alpha") or (last.startswith("v1") and last[2:].isalnum()):
        return base
    return f"{base}/{provider.api_version or DEFAULT_VERSION}"


def _model_path(model: str) -> str:
    name = model.removeprefix("models/")
    return "models/" + quote(name, safe="-._~")


# --- chat -> generateContent -----------------------------------------------------------------------


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": media_type or "image/png", "data": data}}
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
    return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": url}}


def _user_parts(content: Any) -> list[dict[str, Any]]:
    return [({"text": value} if kind == "text" else _image(value)) for kind, value in user_parts(content)
            if kind != "text" or value]


def _object(value: Any) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value) if isinstance(value, str) and value else value
    except orjson.JSONDecodeError:
        return {"result": value}
    if isinstance(parsed, dict):
        return parsed
    return {"result": parsed} if parsed is not None else {}


def generate_content_body(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion request as a Gemini `generateContent` request."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name: a functionResponse names its function

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:  # consecutive turns of one role are one turn to Gemini
            turns[-1]["parts"].extend(parts)
        elif parts:
            turns.append({"role": role, "parts": parts})

    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            text = _text(content)
            if text:
                parts.append({"text": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    name = str(function.get("name") or "")
                    call_names[str(call.get("id") or "")] = name
                    parts.append({"functionCall": {"name": name, "args": _object(function.get("arguments"))}})
            add("model", parts)
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            name = call_names.get(call_id) or str(message.get("name") or call_id)
            add("user", [{"functionResponse": {"name": name, "response": _object(_text(content))}}])
        else:
            add("user", _user_parts(content))
    out: dict[str, Any] = {"contents": turns}
    if any(system):
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(s for s in system if s)}]}
    functions = [t.get("function") for t in body.get("tools") or () if isinstance(t, dict)]
    declarations = [
        {"name": f.get("name"), "description": f.get("description") or "",
         **({"parametersJsonSchema": f["parameters"]} if isinstance(f.get("parameters"), dict) else {})}
        for f in functions if isinstance(f, dict)
    ]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = body.get("tool_choice")
        config: dict[str, Any] = {"mode": "AUTO"}
        if choice == "required":
            config = {"mode": "ANY"}
        elif choice == "none":
            config = {"mode": "NONE"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            config = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
        out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(body)
    if generation:
        out["generationConfig"] = generation
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
                         ("seed", "seed")):
        if _number(body.get(ours)):
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        config["maxOutputTokens"] = limit
    if isinstance(body.get("n"), int) and not isinstance(body.get("n"), bool) and body["n"] > 1:
        config["candidateCount"] = body["n"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = fmt.get("json_schema")
        if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
            config["responseJsonSchema"] = schema["schema"]
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        budgets = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
        if effort in budgets:
            config["thinkingConfig"] = {"thinkingBudget": budgets[effort], "includeThoughts": budgets[effort] > 0}
    return config


# --- generateContent -> chat -------------------------------------------------------------------------


def _usage(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`usageMetadata` in chat's shape: thoughts are output tokens (as Gemini bills them), of them reasoning."""
    prompt = _int(metadata.get("promptTokenCount")) + _int(metadata.get("toolUsePromptTokenCount"))
    thoughts = _int(metadata.get("thoughtsTokenCount"))
    completion = _int(metadata.get("candidatesTokenCount")) + thoughts
    cached = min(_int(metadata.get("cachedContentTokenCount")), prompt)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": _int(metadata.get("totalTokenCount")) or prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def _finish(candidate: Mapping[str, Any], has_calls: bool) -> str | None:
    reason = candidate.get("finishReason")
    if not isinstance(reason, str) or reason in ("", "FINISH_REASON_UNSPECIFIED"):
        return None
    if reason == "STOP" and has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def _parts(candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _call(part: Mapping[str, Any], index: int) -> dict[str, Any]:
    function = _dict(part.get("functionCall"))
    call_id = function.get("id") if isinstance(function.get("id"), str) and function.get("id") else f"call_{index}"
    return {"id": call_id, "type": "function",
            "function": {"name": function.get("name"), "arguments": orjson.dumps(function.get("args") or {}).decode()}}


def chat_completion(reply: dict[str, Any]) -> dict[str, Any]:
    """A GenerateContentResponse as a chat completion (a blocked prompt: no content, `content_filter`)."""
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(c for c in reply.get("candidates") or () if isinstance(c, dict)):
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _parts(candidate):
            if "functionCall" in part:
                calls.append(_call(part, len(calls)))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else text).append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        index = candidate.get("index")
        choices.append({"index": index if isinstance(index, int) else position, "message": message,
                        "finish_reason": _finish(candidate, bool(calls)) or "stop"})
    if not choices:  # promptFeedback.blockReason: the prompt itself was refused
        choices.append({"index": 0, "message": {"role": "assistant", "content": None, "refusal": _blocked(reply)},
                        "finish_reason": "content_filter"})
    out: dict[str, Any] = {
        "id": str(reply.get("responseId") or "gemini"), "object": "chat.completion", "created": int(time.time()),
        "model": reply.get("modelVersion"), "choices": choices,
    }
    if isinstance(reply.get("usageMetadata"), dict):
        out["usage"] = _usage(reply["usageMetadata"])
    return out


def _blocked(reply: Mapping[str, Any]) -> str:
    reason = _dict(reply.get("promptFeedback")).get("blockReason") or "unspecified"
    return f"Gemini blocked the prompt (blockReason {reason})."


class ChatFromGeminiStream:
    """`streamGenerateContent?alt=sse` events in, chat completion chunks out; `[DONE]` once it ends."""

    __slots__ = ("_splitter", "_id", "_model", "_created", "_head", "_calls", "_metadata", "_finished")

    def __init__(self) -> None:
        self._splitter = SseSplitter()
        self._id = "gemini"
        self._model: Any = None
        self._created = int(time.time())
        self._head = b""  # a chunk's bytes up to its delta, once the first event named id and model
        self._calls = 0
        self._metadata: dict[str, Any] | None = None
        self._finished = False

    def feed(self, data: bytes) -> list[Piece]:
        """The chat chunks of one read."""
        out: list[Piece] = []
        for raw in self._splitter.feed(data):
            self._pieces(raw, out)
        return out

    def close(self) -> list[Piece]:
        """An unterminated last event, then the end: Gemini's stream has no closing event of its own."""
        pieces: list[Piece] = []
        for raw in self._splitter.close():
            self._pieces(raw, pieces)
        if self._finished:
            pieces.append(Piece(None, _DONE, True))
        return pieces

    def _chunk(self, delta: dict[str, Any]) -> Piece:
        # Every chunk of a stream shares id, created and model: their bytes are made once. The object
        # is what the meter and the translating fronts read (only `choices`); id and model ride on
        # the first chunk and the finish chunk.
        return Piece({"choices": [{"index": 0, "delta": delta}]},
                     self._head + orjson.dumps(delta) + _CHUNK_TAIL)

    def _start(self, obj: dict[str, Any]) -> Piece:
        self._id = str(obj.get("responseId") or self._id)
        self._model = obj.get("modelVersion")
        self._head = (b'data: {"id":' + orjson.dumps(self._id) + b',"object":"chat.completion.chunk","created":'
                      + str(self._created).encode() + b',"model":' + orjson.dumps(self._model)
                      + b',"choices":[{"index":0,"delta":')
        delta = {"role": "assistant", "content": ""}
        return Piece({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                      "model": self._model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                     self._head + orjson.dumps(delta) + _CHUNK_TAIL)

    def _pieces(self, raw: bytes, pieces: list[Piece]) -> None:
        """Append the chat chunks of one event to `pieces` (the hot path of a translated stream)."""
        obj = parse_event(raw)
        if type(obj) is not dict:
            return
        if "error" in obj and isinstance(obj["error"], dict):
            pieces.append(Piece(obj, raw))  # a fault: the runner ends the exchange with it
            return
        if "usageMetadata" in obj:
            metadata = obj["usageMetadata"]
            if type(metadata) is dict:
                self._metadata = metadata  # each event repeats the running totals: the last one counts
        if not self._head:
            pieces.append(self._start(obj))
        try:  # the usual event's shape, read by subscripts: cheaper than a get and a type check a level
            candidate = obj["candidates"][0]  # a stream carries one candidate (candidateCount 1)
            parts = candidate["content"]["parts"]
        except (KeyError, IndexError, TypeError):
            self._unusual(obj, pieces)
            return
        if type(parts) is list:
            for part in parts:
                if type(part) is not dict:
                    continue
                text = part.get("text")
                if type(text) is str:
                    if text:  # the chunk made here, not by _chunk: one call fewer per event
                        delta = {"reasoning_content": text} if part.get("thought") else {"content": text}
                        pieces.append(Piece({"choices": [{"index": 0, "delta": delta}]},
                                            self._head + orjson.dumps(delta) + _CHUNK_TAIL))
                elif "functionCall" in part:
                    call = _call(part, self._calls)
                    pieces.append(self._chunk({"tool_calls": [{"index": self._calls, **call}]}))
                    self._calls += 1
        if "finishReason" in candidate:
            self._end(_finish(candidate, self._calls > 0), pieces)

    def _unusual(self, obj: dict[str, Any], pieces: list[Piece]) -> None:
        """An event without content parts: a bare finish, a blocked prompt, or nothing we can use."""
        candidates = obj.get("candidates")
        if type(candidates) is list and candidates and type(candidates[0]) is dict:
            if "finishReason" in candidates[0]:
                self._end(_finish(candidates[0], self._calls > 0), pieces)
        elif _dict(obj.get("promptFeedback")).get("blockReason"):
            pieces.append(self._chunk({"refusal": _blocked(obj)}))
            self._end("content_filter", pieces)

    def _end(self, finish: str | None, pieces: list[Piece]) -> None:
        if finish is not None and not self._finished:
            self._finished = True
            pieces.append(self._finish_piece(finish))

    def _finish_piece(self, finish: str) -> Piece:
        """The finish chunk, and the usage chunk with it in one write."""
        obj: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                               "model": self._model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        raw = b"data: " + orjson.dumps(obj) + b"\n\n"
        if self._metadata is not None:
            usage = _usage(self._metadata)
            raw += b"data: " + orjson.dumps({**obj, "choices": [], "usage": usage}) + b"\n\n"
            obj["usage"] = usage
        return Piece(obj, raw)


# --- embeddings ----------------------------------------------------------------------------------------


def _inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ProxyError(400, "A gemini provider embeds text only: 'input' must be a string or an array of strings.",
                     code="invalid_value", param="input")


def embed_body(body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    """The method (`embedContent` or `batchEmbedContents`) and its body for an embeddings request."""
    texts = _inputs(body)
    extra: dict[str, Any] = {}
    if isinstance(body.get("dimensions"), int) and not isinstance(body.get("dimensions"), bool):
        extra["outputDimensionality"] = body["dimensions"]
    if len(texts) == 1 and isinstance(body.get("input"), str):
        return "embedContent", {"content": {"parts": [{"text": texts[0]}]}, **extra}
    return "batchEmbedContents", {"requests": [
        {"model": _model_path(model), "content": {"parts": [{"text": t}]}, **extra} for t in texts]}


def embeddings_reply(reply: dict[str, Any], request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`{embedding}` or `{embeddings: [...]}` as OpenAI's embeddings list (base64 when the client asked)."""
    if isinstance(reply.get("embedding"), dict):
        vectors = [reply["embedding"]]
    elif isinstance(reply.get("embeddings"), list):
        vectors = reply["embeddings"]
    else:
        return None
    as_base64 = request is not None and request.get("encoding_format") == "base64"
    data = []
    for index, vector in enumerate(vectors):
        values = [float(v) for v in _dict(vector).get("values") or ()]
        embedding: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if as_base64 \
            else values
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    out: dict[str, Any] = {"object": "list", "data": data,
                           "model": request.get("model") if request is not None else None}
    if isinstance(reply.get("usageMetadata"), dict):
        prompt = _int(reply["usageMetadata"].get("promptTokenCount"))
        out["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return out


class GeminiAdapter:
    """Google's Gemini API."""

    kind = "gemini"
    native_apis: frozenset[str] = frozenset()
    translated_apis = frozenset({"chat", "embeddings"})

    def build(self, provider: ProviderCfg, api: str, body: dict[str, Any], upstream_model: str,
              stream: bool, client_headers: Mapping[str, str]) -> UpstreamCall:
        """POST {base}/{version}/models/{model}:{method} with the API key header; the body translated."""
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        if provider.server_key:
            headers["x-goog-api-key"] = provider.server_key
        base = f"{api_base(provider)}/{_model_path(upstream_model)}"
        if api == "embeddings":
            method, payload = embed_body(body, upstream_model)
            return UpstreamCall("POST", f"{base}:{method}", headers, orjson.dumps(payload))
        if api != "chat":
            raise ProxyError(400, f"A gemini provider does not serve the {api} API.", code="unsupported_api")
        url = f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent"
        return UpstreamCall("POST", url, headers, orjson.dumps(generate_content_body(body)))

    def decode_reply(self, api: str, raw: bytes, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The reply as a chat completion, or as OpenAI's embeddings list."""
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict):
            return None
        return embeddings_reply(parsed, request) if api == "embeddings" else chat_completion(parsed)

    def stream_decoder(self, api: str) -> ChatFromGeminiStream:
        """Chat chunks made of Gemini's SSE events."""
        return ChatFromGeminiStream()

    def usage(self, obj: dict[str, Any]) -> TokenUsage | None:
        """The usage of a chat completion or chunk this adapter made (from `usageMetadata`)."""
        usage = obj.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
            return None
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        return TokenUsage(prompt, completion, _int(usage.get("total_tokens")) or prompt + completion,
                          cached=_int(_dict(usage.get("prompt_tokens_details")).get("cached_tokens")),
                          reasoning=_int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens")))

    def fault(self, obj: dict[str, Any]) -> UpstreamFault | None:
        """An `{"error": {...}}` event in place of the rest of the stream."""
        error = obj.get("error")
        if not isinstance(error, dict):
            return None
        return UpstreamFault(502, str(error.get("message") or "The upstream failed mid-stream."),
                             str(error.get("status") or "upstream_error"))

    def error_body(self, status: int, raw: bytes, provider: ProviderCfg) -> bytes:
        """Google's `{"error": {code, message, status}}` in OpenAI's shape (keys masked)."""
        body = upstream_error_body(status, raw, provider.name, provider.server_key)
        try:
            error = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return body
        if not isinstance(error, dict) or "type" in error:
            return body
        code = error.get("status") if isinstance(error.get("status"), str) else str(status)
        return orjson.dumps({"error": {"message": str(error.get("message") or ""), "type": "upstream_error",
                                       "param": None, "code": code}})

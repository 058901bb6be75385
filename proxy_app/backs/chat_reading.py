"""What the translating adapters read out of a chat completion request, the same way for every kind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def message_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def user_parts(content: Any) -> Iterator[tuple[str, str]]:
    """A user message's parts in order: ("text", text) and ("image", url); other parts are left out."""
    if isinstance(content, str):
        yield "text", content
        return
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            yield "text", str(part.get("text") or "")
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                yield "image", url


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def positive_int(value: Any) -> int:
    """`value` when it is a positive JSON integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

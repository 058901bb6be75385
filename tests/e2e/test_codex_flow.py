"""A Codex CLI session through run.py in front of a chat-only upstream, request by request.

Codex speaks only the Responses API: it streams every turn, offers function tools
(`shell`) and free-form custom tools (`apply_patch`), sends the whole conversation back
each turn (its own output items, reasoning items included, then the tool results), and
builds its history from `response.output_item.done` items, failing a turn that ends
without `response.completed`. The bodies and headers below are the ones it sends.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from tests.e2e.test_proxy_sdk import wait_until_served
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.nexus_process import NexusProcess

pytestmark = pytest.mark.db

INSTRUCTIONS = "You are Codex, a coding agent running in a terminal."
SHELL = {"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
         "strict": False, "parameters": {"type": "object", "properties": {
             "command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"}},
             "required": ["command"], "additionalProperties": False}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark",
                          "definition": 'start: "*** Begin Patch" LF hunk+ "*** End Patch"'}}
PATCH = "*** Begin Patch\n*** Add File: hi.txt\n+hi\n*** End Patch"


@pytest.fixture
def codex_setup(nexus_factory: Any, upstream: FakeUpstream) -> tuple[NexusProcess, str]:
    nx: NexusProcess = nexus_factory(env={"CONFIG_POLL_INTERVAL": "0.5"})
    r = nx.admin("POST", "/providers", json={"name": "vllm", "server_url": upstream.base_url,
                                             "server_key": "sk-vllm-secret-4242", "apis": ["chat"]})
    assert r.status_code == 201, r.text
    assert nx.admin("POST", "/provider_models", json={"provider_id": r.json()["id"], "model_name": "qwen3-coder",
                                                      "input_price": 0.2, "output_price": 0.8}).status_code == 201
    key = nx.admin("POST", "/keys", json={"name": "codex"}).json()["key"]
    wait_until_served(nx, key, "qwen3-coder")
    return nx, key


def _turn(nx: NexusProcess, key: str, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One Codex turn: the output items it would keep, and the completed response."""
    body = {
        "model": "qwen3-coder", "instructions": INSTRUCTIONS, "input": items, "tools": [SHELL, APPLY_PATCH],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": None, "store": False, "stream": True,
        "include": [], "prompt_cache_key": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    }
    headers = {"Authorization": f"Bearer {key}", "OpenAI-Beta": "responses=experimental",
               "originator": "codex_cli_rs", "session_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
               "Accept": "text/event-stream"}
    r = requests.post(nx.proxy_url + "/v1/responses", json=body, headers=headers, stream=True, timeout=20)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    done: list[dict[str, Any]] = []
    completed: dict[str, Any] | None = None
    for block in r.iter_lines(delimiter=b"\n\n"):
        fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
        if "data" not in fields:
            continue
        event = json.loads(fields["data"])
        assert fields["event"] == event["type"]
        if event["type"] == "response.output_item.done":
            done.append(event["item"])
        elif event["type"] == "response.completed":
            completed = event["response"]
    assert completed is not None, "the stream closed before response.completed"
    return done, completed


def test_codex_session_against_a_chat_only_upstream(codex_setup: tuple[NexusProcess, str],
                                                    upstream: FakeUpstream) -> None:
    nx, key = codex_setup
    history: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi in hi.txt"}]},
    ]

    # Turn 1: the model thinks, then calls the shell.
    upstream.default = Scenario(reply="", reasoning="Look first.", prompt_tokens=310, completion_tokens=25,
                                tool_calls=[("shell", '{"command":["ls"]}')])
    items, completed = _turn(nx, key, history)
    assert [i["type"] for i in items] == ["reasoning", "function_call"]
    call = items[1]
    assert (call["name"], call["arguments"], call["call_id"]) == ("shell", '{"command":["ls"]}', "call_fake_0")
    assert completed["usage"]["input_tokens"] == 310 and completed["usage"]["total_tokens"] == 335
    (first,) = upstream.chat_requests()
    assert first.body["messages"] == [
        {"role": "system", "content": INSTRUCTIONS}, {"role": "system", "content": "<permissions/>"},
        {"role": "user", "content": "<environment_context/>"}, {"role": "user", "content": "say hi in hi.txt"}]
    tools = {t["function"]["name"]: t["function"] for t in first.body["tools"]}
    assert tools["shell"]["parameters"] == SHELL["parameters"]
    assert tools["apply_patch"]["parameters"]["required"] == ["input"]
    assert APPLY_PATCH["format"]["definition"] in tools["apply_patch"]["description"]  # type: ignore[index]

    # Turn 2: the shell's output goes back with the whole history; the model patches a file.
    history += [*({**item, "encrypted_content": None} if item["type"] == "reasoning" else item for item in items),
                {"type": "function_call_output", "call_id": "call_fake_0", "output": "README.md\n"}]
    upstream.default = Scenario(reply="", tool_calls=[("apply_patch", json.dumps({"input": PATCH}))])
    items, _ = _turn(nx, key, history)
    (patch,) = items
    assert patch["type"] == "custom_tool_call" and (patch["name"], patch["input"]) == ("apply_patch", PATCH)
    second = upstream.chat_requests()[1].body["messages"]
    assert second[4:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake_0", "type": "function",
            "function": {"name": "shell", "arguments": '{"command":["ls"]}'}}]},
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "README.md\n"}]

    # Turn 3: the patch's result goes back; the model answers in text and the turn ends.
    history += [patch, {"type": "custom_tool_call_output", "call_id": patch["call_id"], "output": "Done!"}]
    upstream.default = Scenario(reply="I wrote hi to hi.txt.", prompt_tokens=400, completion_tokens=8)
    items, completed = _turn(nx, key, history)
    (message,) = items
    assert message["type"] == "message" and message["content"][0]["text"] == "I wrote hi to hi.txt."
    assert completed["status"] == "completed" and completed["output"] == items
    third = upstream.chat_requests()[2].body["messages"]
    assert third[-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": patch["call_id"], "type": "function", "function": {
            "name": "apply_patch", "arguments": json.dumps({"input": PATCH}, separators=(",", ":"))}}]},
        {"role": "tool", "tool_call_id": patch["call_id"], "content": "Done!"}]
    assert upstream.requests_to("/v1/responses") == []

    exported = _exported(nx, 3)
    assert [(r["api"], r["stream"], r["status_code"]) for r in exported] == [("responses", True, 200)] * 3
    assert [r["prompt_tokens"] for r in exported] == [310, 17, 400]


def _exported(nx: NexusProcess, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The usage rows, oldest first, once `n` are written (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = nx.admin("GET", "/usage/export", params={"format": "jsonl"}).text.strip().splitlines()
        if len(lines) >= n or time.monotonic() > deadline:
            return sorted((json.loads(line) for line in lines), key=lambda r: r["created_at"])
        time.sleep(0.1)

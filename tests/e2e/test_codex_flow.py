"""A Codex CLI session through run.py in front of a chat-only upstream, request by request.

Codex speaks only the Responses API: it streams every turn, offers function tools
(`exec_command`), tools grouped in a namespace (`multi_agent_v1`) and, for some models,
free-form custom tools (`apply_patch`); it sends the whole conversation back each turn
(its own output items, reasoning items included, then the tool results) and builds its
history from `response.output_item.done` items, failing a turn that ends without
`response.completed`. The bodies and headers below are the ones Codex CLI 0.171 sends
(captured from it; shortened), with `web_search = "disabled"` in its config.
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

INSTRUCTIONS = "You are a coding agent running in the Codex CLI, a terminal-based coding assistant."
SHELL = {"type": "function", "name": "exec_command",
         "description": "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
         "strict": False, "parameters": {"type": "object", "properties": {
             "cmd": {"type": "string", "description": "Shell command to execute."},
             "workdir": {"type": "string"}}, "required": ["cmd"], "additionalProperties": False}}
AGENTS = {"type": "namespace", "name": "multi_agent_v1", "description": "Tools for spawning and managing sub-agents.",
          "tools": [{"type": "function", "name": "wait_agent", "description": "Wait for an agent.", "strict": False,
                     "parameters": {"type": "object", "properties": {"target": {"type": "string"}},
                                    "required": ["target"], "additionalProperties": False}}]}
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
        "model": "qwen3-coder", "stream": True, "input": items, "tools": [SHELL, AGENTS, APPLY_PATCH],
        "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"}, "store": False,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "01a23404-8b8d-7c21-9808-655a48aef9f1",
        "client_metadata": {"thread_id": "01a23404-8b8d-7c21-9808-655a48aef9f1", "turn_id": "01a23404-8ba4"},
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
        {"type": "message", "id": "msg_1", "role": "developer",
         "content": [{"type": "input_text", "text": INSTRUCTIONS}]},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi in hi.txt"}]},
    ]

    # Turn 1: the model thinks, then calls the shell.
    upstream.default = Scenario(reply="", reasoning="Look first.", prompt_tokens=310, completion_tokens=25,
                                tool_calls=[("exec_command", '{"cmd":"ls"}')])
    items, completed = _turn(nx, key, history)
    assert [i["type"] for i in items] == ["reasoning", "function_call"]
    call = items[1]
    assert (call["name"], call["arguments"], call["call_id"]) == ("exec_command", '{"cmd":"ls"}', "call_fake_0")
    assert completed["usage"]["input_tokens"] == 310 and completed["usage"]["total_tokens"] == 335
    (first,) = upstream.chat_requests()
    assert first.body["messages"] == [
        {"role": "system", "content": INSTRUCTIONS}, {"role": "system", "content": "<permissions/>"},
        {"role": "user", "content": "<environment_context/>"}, {"role": "user", "content": "say hi in hi.txt"}]
    tools = {t["function"]["name"]: t["function"] for t in first.body["tools"]}
    assert set(tools) == {"exec_command", "multi_agent_v1__wait_agent", "apply_patch"}
    assert tools["exec_command"]["parameters"] == SHELL["parameters"]
    assert "client_metadata" not in first.body and "include" not in first.body and "store" not in first.body
    assert tools["apply_patch"]["parameters"]["required"] == ["input"]
    assert APPLY_PATCH["format"]["definition"] in tools["apply_patch"]["description"]  # type: ignore[index]

    # Turn 2: the command's output goes back with the whole history; the model patches a file
    # and waits for a sub-agent (a tool of a namespace), in parallel.
    history += [*({**item, "encrypted_content": None} if item["type"] == "reasoning" else item for item in items),
                {"type": "function_call_output", "call_id": "call_fake_0", "output": "README.md\n"}]
    upstream.default = Scenario(reply="", tool_calls=[("apply_patch", json.dumps({"input": PATCH})),
                                                      ("multi_agent_v1__wait_agent", '{"target":"a1"}')])
    items, _ = _turn(nx, key, history)
    (patch, wait) = items
    assert patch["type"] == "custom_tool_call" and (patch["name"], patch["input"]) == ("apply_patch", PATCH)
    assert (wait["type"], wait["name"], wait["namespace"]) == ("function_call", "wait_agent", "multi_agent_v1")
    second = upstream.chat_requests()[1].body["messages"]
    assert second[4:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake_0", "type": "function",
            "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}}]},
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "README.md\n"}]

    # Turn 3: both results go back; the model answers in text and the turn ends.
    history += [patch, wait, {"type": "custom_tool_call_output", "call_id": patch["call_id"], "output": "Done!"},
                {"type": "function_call_output", "call_id": wait["call_id"], "output": "a1 finished"}]
    upstream.default = Scenario(reply="I wrote hi to hi.txt.", prompt_tokens=400, completion_tokens=8)
    items, completed = _turn(nx, key, history)
    (message,) = items
    assert message["type"] == "message" and message["content"][0]["text"] == "I wrote hi to hi.txt."
    assert completed["status"] == "completed" and completed["output"] == items
    third = upstream.chat_requests()[2].body["messages"]
    assert third[-3:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": patch["call_id"], "type": "function", "function": {
                "name": "apply_patch", "arguments": json.dumps({"input": PATCH}, separators=(",", ":"))}},
            {"id": wait["call_id"], "type": "function", "function": {
                "name": "multi_agent_v1__wait_agent", "arguments": '{"target":"a1"}'}}]},
        {"role": "tool", "tool_call_id": patch["call_id"], "content": "Done!"},
        {"role": "tool", "tool_call_id": wait["call_id"], "content": "a1 finished"}]
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

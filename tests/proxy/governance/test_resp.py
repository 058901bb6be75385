"""The limiter's Redis client against a real redis-server: pipelining, AUTH/SELECT, lost scripts, deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from proxy_app.governance.resp import RedisTrouble, Resp
from tests.support.redis_server import RedisServer

SCRIPT = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), ARGV[2]}"


async def test_pipelined_calls_keep_their_order(redis_server: RedisServer, redis_prefix: str) -> None:
    client = Resp(redis_server.url, 1.0)
    try:
        replies = await asyncio.gather(*(client.call("INCR", redis_prefix + "n") for _ in range(500)))
        assert replies == list(range(1, 501))  # one connection, answers matched in order
        assert await client.pipeline(("SET", redis_prefix + "a", "x"), ("GET", redis_prefix + "a")) == [b"OK", b"x"]
    finally:
        await client.close()


async def test_password_and_database_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret-redis-pass").start()
    try:
        client = Resp(server.url.replace("/0", "/3"), 1.0)
        await client.call("SET", "where", "db3")
        assert await client.call("GET", "where") == b"db3"
        await client.close()
        on_zero = Resp(server.url, 1.0)
        assert await on_zero.call("GET", "where") is None  # SELECT 3 took the first client elsewhere
        await on_zero.close()
        wrong = Resp(server.url.replace("s3cret-redis-pass", "wrong-pass"), 1.0)
        with pytest.raises(RedisTrouble) as refused:
            await wrong.call("PING")
        assert "wrong-pass" not in str(refused.value) and "s3cret" not in str(refused.value)
        assert "s3cret" not in client.where
        await wrong.close()
    finally:
        server.stop()


async def test_a_script_redis_forgot_is_loaded_again(redis_server: RedisServer, redis_prefix: str) -> None:
    client = Resp(redis_server.url, 1.0)
    try:
        sha = client.script(SCRIPT)
        assert await client.evalsha(sha, (redis_prefix + "s",), (5, "a")) == [5, b"a"]
        await client.call("SCRIPT", "FLUSH")  # as after a restart of Redis
        assert await client.evalsha(sha, (redis_prefix + "s",), (2, "b")) == [7, b"b"]
        with pytest.raises(RedisTrouble, match="WRONGTYPE|ERR"):
            await client.call("LPUSH", redis_prefix + "s", "x")  # an error reply fails only its call
        assert await client.call("GET", redis_prefix + "s") == b"7"
    finally:
        await client.close()


async def test_a_silent_server_fails_calls_within_the_deadline_then_it_reconnects(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "stall").start()
    client = Resp(server.url, 0.2)
    try:
        assert await client.call("PING") == b"PONG"
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        calls = [asyncio.ensure_future(client.call("PING")) for _ in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(r, RedisTrouble) and "within 0.2 s" in str(r) for r in results)
        assert waited < 0.6  # the deadline, plus at most half of it for the watchdog
        os.kill(server.process.pid, signal.SIGCONT)
        assert await client.call("PING") == b"PONG"  # a new connection
        server.stop()
        with pytest.raises(RedisTrouble, match="cannot connect|connection to Redis lost"):
            await client.call("PING")  # the old connection may not know yet
        with pytest.raises(RedisTrouble, match="cannot connect to Redis at 127.0.0.1"):
            await client.call("PING")
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
        await client.close()

"""CPU per Redis call: redis-py's asyncio client against the proxy's own (proxy_app/governance/resp.py).

    pip install -r bench/requirements.txt && python -m bench.redis_client

Both run the same EVALSHA (6 keys, 14 arguments, as an admission sends) against a
throwaway redis-server on loopback, on uvloop, with 1, 16 and 64 concurrent callers;
then a whole admission plus settlement through RedisLimiter and through MemoryLimiter.
The figure is this process's CPU time per call (Redis's own is not counted).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

if __package__ in (None, ""):  # `python bench/redis_client.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from bench.harness import RedisProcess
from proxy_app.config import KeyCfg
from proxy_app.governance.memory import MemoryLimiter
from proxy_app.governance.resp import Resp
from proxy_app.governance.shared_limits import RedisLimiter

SCRIPT = "return {0, 1, 2, 3, 4, 5, 6}"
KEYS = ("a", "b", "c", "d", "e", "f")
ARGS = tuple(range(14))
CALLS = 20_000
KEY = KeyCfg(id=5, name="bench", hint="", provider_ids=frozenset(), models=frozenset(), enabled=True,
             expires_at=None, archive_messages=None, rpm=10_000_000, tpm=10_000_000_000, max_concurrency=100_000,
             token_quota=10**15, budget_usd=Decimal(10**9), quota_period="daily")


async def _per_call(call: Callable[[], Awaitable[object]], concurrency: int) -> float:
    """µs of this process's CPU per call, `concurrency` callers at once."""
    async def caller(n: int) -> None:
        for _ in range(n):
            await call()
    started = time.process_time()
    await asyncio.gather(*(caller(CALLS // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / CALLS * 1e6


async def redis_py(url: str, concurrency: int) -> float:
    """redis-py's asyncio client (as hiredis-enabled as it is installed), retries off."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis.from_url(url, socket_timeout=0.25, retry=Retry(NoBackoff(), 0))
    script = client.register_script(SCRIPT)
    await script(keys=KEYS, args=ARGS)
    try:
        return await _per_call(lambda: script(keys=KEYS, args=ARGS), concurrency)
    finally:
        await client.aclose()


async def ours(url: str, concurrency: int) -> float:
    """proxy_app.governance.resp.Resp."""
    client = Resp(url, 0.25)
    sha = client.script(SCRIPT)
    await client.evalsha(sha, KEYS, ARGS)
    try:
        return await _per_call(lambda: client.evalsha(sha, KEYS, ARGS), concurrency)
    finally:
        await client.close()


async def limiter_pair(url: str | None, concurrency: int) -> float:
    """One admission and its settlement: RedisLimiter (url) or MemoryLimiter (None)."""
    limiter: RedisLimiter | MemoryLimiter
    if url:
        limiter = RedisLimiter(url, prefix=f"bench{time.time_ns()}:")
        await limiter.start()
    else:
        limiter = MemoryLimiter()

    async def pair() -> None:
        ticket, _ = await limiter.admit(KEY, 100, Decimal("0.0001"))
        await limiter.settle(ticket, 90, Decimal("0.00009"))
    try:
        return await _per_call(pair, concurrency)
    finally:
        if isinstance(limiter, RedisLimiter):
            await limiter.stop()


def main() -> int:
    """Print µs per call for each client and concurrency."""
    with tempfile.TemporaryDirectory(prefix="nexusai-redis-") as tmp:
        server = RedisProcess(Path(tmp))
        try:
            import redis.utils

            hiredis = "with hiredis" if redis.utils.HIREDIS_AVAILABLE else "without hiredis"
            print(f"µs of CPU per call, {CALLS} calls, uvloop; redis-py {hiredis}")
            for concurrency in (1, 16, 64):
                row = [uvloop.run(f(server.url, concurrency)) for f in (redis_py, ours)]
                pairs = [uvloop.run(limiter_pair(u, concurrency)) for u in (server.url, None)]
                print(f"concurrency {concurrency:2}: redis-py {row[0]:6.1f}  ours {row[1]:6.1f}  |  admission + "
                      f"settlement: RedisLimiter {pairs[0]:6.1f}  MemoryLimiter {pairs[1]:6.1f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

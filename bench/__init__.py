"""Benchmark harness for the NexusAI proxy (never imported by the product).

    python -m bench.run     # direct-to-mock vs through NexusAI, side by side
    python -m bench.soak    # memory soak: RSS over many mixed requests

`mock_upstream` is an OpenAI-compatible upstream, `loadgen` a closed-loop load
generator on raw asyncio protocols, `harness` seeds a database and starts the
real `python run.py proxy`, pinned to its own CPU. See docs/benchmarks.md.
"""

"""glibc malloc settings for the proxy process: fewer arenas, start-up garbage handed back."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
PROXY_ARENAS = 1


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only (musl has neither call)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = PROXY_ARENAS) -> None:
    """Cap glibc's malloc arenas before any thread starts.

    Every thread that allocates (the writers, the executor's token counting) otherwise gets
    an arena of its own whose freed pages stay resident: ~6 MiB of the proxy's steady RSS.
    The loop does nearly all allocation, so one arena costs no contention worth measuring.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def trim_heap() -> None:
    """Hand freed heap pages back to the system (after start-up's imports and loads)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

"""Governance: a key's limits behind one async interface (in memory, or shared through Redis), and breakers."""

from __future__ import annotations

from proxy_app.governance.base import Limiter, Ticket, is_limited, needs_reservation
from proxy_app.governance.memory import MemoryLimiter

__all__ = ["Limiter", "MemoryLimiter", "Ticket", "is_limited", "needs_reservation"]

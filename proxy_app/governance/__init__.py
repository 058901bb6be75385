"""Governance: a key's limits behind one async interface (in memory now; Redis for scale-out)."""

from __future__ import annotations

from proxy_app.governance.base import Limiter, Ticket, is_limited, needs_reservation
from proxy_app.governance.memory import MemoryLimiter

__all__ = ["Limiter", "MemoryLimiter", "Ticket", "is_limited", "needs_reservation"]

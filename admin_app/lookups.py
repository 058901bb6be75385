"""Fetch a row by its URL id, or answer 404."""

from __future__ import annotations

from typing import TypeVar

from admin_app.errors import NotFound
from admin_app.extensions import db
from admin_app.schemas.fields import INT32_MAX
from shared.models import Base

RowT = TypeVar("RowT", bound=Base)


def get_or_404(model: type[RowT], row_id: int, label: str) -> RowT:
    """The `model` row with `row_id`, or a 404 naming `label`."""
    # Ids beyond the INTEGER column's range would be a driver error, not a miss.
    row = db.session.get(model, row_id) if 1 <= row_id <= INT32_MAX else None
    if row is None:
        raise NotFound(f"{label} {row_id} does not exist")
    return row

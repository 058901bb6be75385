"""The single blueprint every resource module registers its routes on."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)

"""Direct database seeding for proxy tests (the admin API has its own tests)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.db import bump_config_version
from shared.models import ApiKey, Provider, ProviderModel
from shared.secrets import hash_key, key_hint

# The seed project's own request bodies, which must keep working unchanged.
SEED_CLIENT_KEY = "my-key-123"
SEED_MODEL = {"provider_id": 1, "model_name": "gpt-4", "description": "GPT-4 model"}


def seed_provider(server_key: str) -> dict[str, str]:
    """The seed's `POST /providers` body with the given server key."""
    return {
        "name": "openai",
        "server_url": "https://api.openai.com/v1",
        "server_key": server_key,
        "personalized_key": SEED_CLIENT_KEY,
        "description": "OpenAI official API",
    }


def add_provider(engine: Engine, name: str, url: str, server_key: str = "sk-upstream-secret-0001", **kw: Any) -> int:
    """Insert a provider; returns its id."""
    with Session(engine) as s, s.begin():
        p = Provider(name=name, server_url=url, server_key=server_key, **kw)
        s.add(p)
        s.flush()
        bump_config_version(s)
        return p.id


def add_model(engine: Engine, provider_id: int, model_name: str, upstream_name: str | None = None,
              input_price: str | None = None, output_price: str | None = None, **kw: Any) -> int:
    """Insert a provider model; returns its id."""
    with Session(engine) as s, s.begin():
        m = ProviderModel(
            provider_id=provider_id, model_name=model_name, upstream_name=upstream_name,
            input_price=Decimal(input_price) if input_price else None,
            output_price=Decimal(output_price) if output_price else None, **kw,
        )
        s.add(m)
        s.flush()
        bump_config_version(s)
        return m.id


def add_key(engine: Engine, raw: str, name: str = "test key", **kw: Any) -> int:
    """Insert a client key (hashed); returns its id."""
    with Session(engine) as s, s.begin():
        k = ApiKey(name=name, key_hash=hash_key(raw), key_hint=key_hint(raw), **kw)
        s.add(k)
        s.flush()
        bump_config_version(s)
        return k.id

"""The proxy's route table, in one place."""

from __future__ import annotations

from aiohttp import web

from proxy_app.fronts.chat import chat_completions
from proxy_app.fronts.completions import completions
from proxy_app.fronts.embeddings import embeddings
from proxy_app.fronts.health import health, root
from proxy_app.fronts.messages import count_tokens, messages
from proxy_app.fronts.models import list_models, retrieve_model
from proxy_app.fronts.operations import metrics, ready
from proxy_app.fronts.provider_check import provider_test
from proxy_app.fronts.responses import responses
from proxy_app.fronts.ws_chat import ws_chat


def setup_routes(app: web.Application) -> None:
    """Register every route of the proxy."""
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)  # the operator's, not a client key's
    app.router.add_post("/admin/providers/{provider_id}/test", provider_test)  # the operator's too
    app.router.add_get("/", root)  # and HEAD: Claude Code probes the base URL
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
    # A model id may hold a slash ("provider/model"): the rest of the path is the id.
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/models/{model:.+}", retrieve_model)
    app.router.add_get("/ws/chat", ws_chat)

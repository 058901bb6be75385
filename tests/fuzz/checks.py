"""Schemathesis checks of our own, loaded by the fuzzing leg (`SCHEMATHESIS_HOOKS=tests.fuzz.checks`).

Two rules of the usage windows cannot be written in JSON Schema: `end_date` must not
come before `start_date`, and a report with a daily breakdown spans at most 366 UTC
days. The operations that have them are fuzzed with the stock "schema-valid data is
accepted" check turned off (tests/fuzz/schemathesis.toml) and with this one instead: the
same check, save that a 400 naming only those two rules is the right answer.

Deleting a provider deletes its models (the admin documents the cascade). Schemathesis's
"created resource is available" check counts only a DELETE of the resource's own path as
its removal, so a model gone with its provider looked lost. The model operations use
`cascade_aware_availability` instead: the stock check, save that a 404 for a model whose
provider was deleted since it was created is the right answer.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import ensure_resource_availability

WINDOW_OPERATIONS = frozenset({
    "GET /usage",
    "GET /usage/export",
    "GET /stats/total",
    "GET /stats/conversation/{conversation_id}",
    "GET /keys/{key_id}/usage",
})
_WINDOW_RULES = ("end_date must not be before start_date.", "The window spans ")
_ACCEPTED = frozenset({401, 403, 404, 409, 429})


def _window_refusal(body: Any) -> bool:
    """True for a 400 whose every detail is one of the two window rules."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    details = body["error"].get("details")
    if body["error"].get("code") != "invalid_parameter" or not isinstance(details, dict) or not details:
        return False
    return all(
        name in {"start_date", "end_date"}
        and isinstance(messages, list)
        and all(isinstance(m, str) and m.startswith(_WINDOW_RULES) for m in messages)
        for name, messages in details.items()
    )


@schemathesis.check
def window_aware_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schema-valid requests to the window operations are answered 2xx/3xx, or refused only by the window rules."""
    if case.operation.label not in WINDOW_OPERATIONS or case.meta is None:
        return None
    if not case.meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in _ACCEPTED or status >= 500:
        return None  # 5xx are the server-error check's to report
    if status == 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if _window_refusal(body):
            return None
    raise AssertionError(f"Valid data should have been accepted (got {status}): {response.text[:500]}")


MODEL_OPERATIONS = frozenset({
    "GET /provider_models/{model_id}", "PUT /provider_models/{model_id}", "PATCH /provider_models/{model_id}",
    "DELETE /provider_models/{model_id}",
})


def _provider_deleted(ctx: Any, case: Any) -> bool:
    """Whether a successful DELETE /providers/{id} of the model's provider came after its creation."""
    internals = ctx.internals
    parent = internals.find_parent(case_id=case.id)
    created = internals.find_response(case_id=parent.id) if parent is not None else None
    recorder = internals.recorder
    if created is None or recorder is None:
        return False
    try:
        provider_id = created.json().get("provider_id")
    except (ValueError, AttributeError):
        return False
    for prior in recorder.find_all_cases():
        if prior.operation.label != "DELETE /providers/{provider_id}" or prior.id == case.id:
            continue
        answer = recorder.find_response(case_id=prior.id)
        if answer is not None and 200 <= answer.status_code < 300 \
                and str((prior.path_parameters or {}).get("provider_id")) == str(provider_id):
            return True
    return False


@schemathesis.check
def cascade_aware_availability(ctx: Any, response: Any, case: Any) -> bool | None:
    """The stock availability check on the model operations, knowing that a provider's delete takes its models."""
    if case.operation.label not in MODEL_OPERATIONS:
        return None
    if response.status_code == 404 and _provider_deleted(ctx, case):
        return None
    return ensure_resource_availability(ctx, response, case)

"""Schemathesis checks of our own, loaded by the fuzzing leg (`SCHEMATHESIS_HOOKS=tests.fuzz.checks`).

Two rules of the usage windows cannot be written in JSON Schema: `end_date` must not
come before `start_date`, and a report with a daily breakdown spans at most 366 UTC
days. The operations that have them are fuzzed with the stock "schema-valid data is
accepted" check turned off (tests/fuzz/schemathesis.toml) and with this one instead: the
same check, save that a 400 naming only those two rules is the right answer.
"""

from __future__ import annotations

from typing import Any

import schemathesis

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

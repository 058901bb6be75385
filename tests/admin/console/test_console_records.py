"""The console's usage table: the export's filters, newest first, paged on the server."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.admin.test_usage_reports import History, select_rows
from tests.admin.test_usage_reports import history as history  # noqa: F401  (the fixture)

pytestmark = pytest.mark.db

REQUEST_ID = re.compile(r'<td title="([^"]+)">')


def _page_ids(history: History, query: str) -> tuple[list[str], bool]:
    page = requests.get(f"{history.admin.base_url}/console/usage?{query}", timeout=10)
    assert page.status_code == 200, page.text[:500]
    return REQUEST_ID.findall(page.text), 'rel="next"' in page.text


def test_the_records_table_pages_through_exactly_the_matching_rows(history: History) -> None:
    key = history.key_ids[1]
    start = (datetime.now(timezone.utc) - timedelta(days=20)).date()
    expected = sorted(select_rows(history.rows, datetime.combine(start, datetime.min.time(), timezone.utc),
                                  key_id=key), key=lambda r: (r["created_at"], r["request_id"]), reverse=True)
    seen: list[str] = []
    for page in range(1, 50):
        ids, more = _page_ids(history, f"key_id={key}&start_date={start.isoformat()}&page={page}")
        seen += ids
        if not more:
            break
    assert sorted(seen) == sorted(r["request_id"] for r in expected) and len(seen) == len(set(seen))
    assert len(seen) > 50  # more than one page was read


def test_status_and_api_filters_match_the_export(history: History) -> None:
    ids, _ = _page_ids(history, "status=error&api=responses")
    expected = sorted((r for r in history.rows if r["status_code"] >= 400 and r["api"] == "responses"),
                      key=lambda r: r["created_at"], reverse=True)[:50]
    assert ids == [r["request_id"] for r in expected]
    export = requests.get(f"{history.admin.base_url}/console/usage/export?format=csv&status=error&api=responses",
                          timeout=10)
    assert export.status_code == 200 and export.headers["Content-Type"].startswith("text/csv")
    assert export.text.count("\r\n") - 1 == sum(1 for r in history.rows if r["status_code"] >= 400
                                                 and r["api"] == "responses")

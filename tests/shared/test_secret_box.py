"""Sealing provider secrets with SECRET_KEY, opening them with it or a fallback, and key hints."""

from __future__ import annotations

import pytest

from shared.secret_box import SecretBox, SecretUnavailable, is_sealed
from shared.secrets import HINT_MAX_CHARS, key_hint


def test_a_sealed_secret_opens_only_with_its_key_or_a_fallback() -> None:
    sealed = SecretBox("first-key").seal("sk-live-0123456789")
    assert sealed is not None and is_sealed(sealed) and "0123456789" not in sealed
    assert sealed != SecretBox("first-key").seal("sk-live-0123456789")  # a fresh IV every time

    assert SecretBox("first-key").open(sealed) == "sk-live-0123456789"
    assert SecretBox("second-key", ["first-key"]).open(sealed) == "sk-live-0123456789"
    with pytest.raises(SecretUnavailable, match="neither SECRET_KEY nor in SECRET_KEY_FALLBACKS"):
        SecretBox("second-key").open(sealed)
    with pytest.raises(SecretUnavailable, match="SECRET_KEY is not set"):
        SecretBox(None).open(sealed)


def test_without_a_key_values_stay_in_clear_and_clear_values_always_open() -> None:
    clear = SecretBox(None)
    assert not clear.sealing and clear.seal("sk-abc") == "sk-abc"
    assert SecretBox("k").open("sk-stored-before-sealing") == "sk-stored-before-sealing"
    assert SecretBox("k").seal("") == "" and SecretBox("k").seal(None) is None
    with pytest.raises(SecretUnavailable):
        SecretBox("k").open("enc:v1:not-a-token")


def test_is_current_says_what_a_reseal_would_change() -> None:
    old, new = SecretBox("old"), SecretBox("new", ["old"])
    by_old = old.seal("secret")
    assert old.is_current(by_old) and not new.is_current(by_old)
    assert new.is_current(new.seal("secret")) and not new.is_current("secret")
    assert SecretBox(None).is_current("secret") and not SecretBox(None, ["old"]).is_current(by_old)
    assert new.is_current("") and new.is_current(None)


@pytest.mark.parametrize("length", range(0, 60))
def test_a_hint_shows_at_most_four_characters_and_a_third_of_the_key(length: int) -> None:
    key = "".join(chr(ord("a") + i % 26) for i in range(length))
    hint = key_hint(key)
    shown = hint.removeprefix("…")
    assert hint == ("" if not key else "…" + shown)
    assert len(shown) <= HINT_MAX_CHARS and len(shown) * 3 <= length
    assert key.endswith(shown)


def test_the_seed_style_key_and_a_one_character_key_are_not_given_away() -> None:
    assert key_hint("your-custom-key") == "…-key"
    assert key_hint("x") == "…"
    assert key_hint("nx-" + "A" * 39 + "3f9a") == "…3f9a"

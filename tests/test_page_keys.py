"""Keys located in a page's bytes: what a literal search finds, and numbers told apart as written.

``written_as_float`` looks a few bytes past each key first and further only for the numbers not
ended there, so each width it steps through is crossed here: a number ending just inside a
window, one ending on its last byte, and one too long for every window (None: the general path).
"""

from __future__ import annotations

import orjson
import pytest

from airflow_provider_cdr.convert.page_keys import PageKeys

# Lengths around the window widths (8, 24, 64): a token's end must be seen inside the window.
LENGTHS = (1, 6, 7, 8, 9, 22, 23, 24, 25, 62, 63)


def number_texts() -> list[str]:
    texts = []
    for length in LENGTHS:
        texts.append("7" * length)  # an integer
        if length >= 3:
            texts.append("7" * (length - 2) + ".5")  # a fraction ending at the same length
            texts.append("7" * (length - 2) + "e5")  # an exponent
            texts.append("-" + "7" * (length - 3) + "E1")
    return texts


def page(texts: list[str]) -> bytes:
    records = b",".join(b'{"agent_id":' + text.encode() + b',"uuid":"u"}' for text in texts)
    return b'{"records":[' + records + b'],"search_token":null}'


@pytest.mark.parametrize("last", [False, True], ids=["mid-page", "the page's last value"])
def test_numbers_of_every_length_are_told_float_or_not_as_written(last: bool) -> None:
    texts = number_texts()
    body = page(texts) if not last else b'{"agent_id":' + texts[-1].encode() + b"}"
    keys = PageKeys(body)
    floats = keys.written_as_float(keys.of("agent_id"))
    assert floats is not None
    expected = [any(mark in text for mark in ".eE") for text in (texts if not last else texts[-1:])]
    assert floats.tolist() == expected


def test_a_number_longer_than_every_window_is_left_to_the_general_path() -> None:
    keys = PageKeys(page(["1", "9" * 70, "2.5"]))
    assert keys.written_as_float(keys.of("agent_id")) is None


def test_keys_are_found_where_a_literal_search_finds_them() -> None:
    body = orjson.dumps({"records": [{"agent_id": 1, "x": "agent_id", "nested": {"agent_id": 2}}]})
    at = PageKeys(body).of("agent_id")
    literal = [i + len(b'"agent_id"') for i in range(len(body)) if body.startswith(b'"agent_id":', i)]
    assert at.tolist() == literal


@pytest.mark.parametrize(
    ("body", "spaced"),
    [
        (b'{"records":[{"uuid":"u","at":"12:43"}]}', False),  # compact; a colon inside a value
        (orjson.dumps({"records": [{"uuid": "u"}]}, option=orjson.OPT_INDENT_2), False),  # "k": v
        (b'{"records":[{"uuid" :"u"}]}', True),  # a key `of` cannot see
        (b'{"records":[{"uuid":"u","text":"Note :\\tx"}]}', True),  # only a value: told all the same
        (b'{"records":[{"uuid"\n:"u"}]}', True),
    ],
)
def test_a_colon_after_whitespace_is_told(body: bytes, spaced: bool) -> None:
    assert PageKeys(body).spaced_colons is spaced

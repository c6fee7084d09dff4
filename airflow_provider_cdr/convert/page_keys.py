"""Where a page's object keys sit in its bytes, found in one vectorised pass over the page.

The Arrow path (``arrow_page``) must know, before Arrow parses a page, which records send a
number field as a string or an integer field as a float, and after it, whether an unknown key is
ever sent as ``null``. Searching the bytes once per key and per kind of drift cost more than
Arrow's parse of the page; here every key of the page is located at once (a key ends where a
``:`` follows a ``"``), and each question is a small gather at those positions.

Matching ``"name":`` whole at such a position finds exactly what searching the literal
``"name":`` in the bytes finds: a quote inside a JSON string is escaped, so the literal can only
start at the opening quote of a key. (A key that itself contains an escaped quote followed by
``name`` would match too; the callers check counts against what Arrow read, so such a page
leaves the Arrow path rather than being misread.)
"""

from __future__ import annotations

import numpy as np
import orjson

from airflow_provider_cdr.convert.arrays import byte_items, byte_windows

_COLON, _QUOTE = ord(":"), ord('"')


def _byte_set(members: bytes) -> np.ndarray:
    """A 256-entry lookup table: ``table[byte_array]`` is a membership test for a whole array."""
    table = np.zeros(256, dtype=bool)
    table[list(members)] = True
    return table


IS_NUMBER_START = _byte_set(b"-0123456789")
_IS_TOKEN_END = _byte_set(b",}] \t\r\n")
_IS_FLOAT_MARK = _byte_set(b".eE")
_IS_SPACE = _byte_set(b" \t\r\n")
_NUMBER_WIDTHS = (8, 24, 64)  # bytes a number token may take before the page is left to the general path


class PageKeys:
    """The positions of the ``:`` after every object key of a page (records and the page's own)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.bytes = np.frombuffer(body, dtype=np.uint8)
        colons = np.flatnonzero(self.bytes[1:] == _COLON) + 1
        before = self.bytes[colons - 1]
        # int32 (a page is far below 2 GiB): half the memory while a page read ahead waits with them.
        self._colons = colons[before == _QUOTE].astype(np.int32)
        #: Whether some ``:`` follows whitespace: a key written ``"name" :``, which `of` does not see
        #: (or only a colon inside a string value); compact and pretty-printed JSON have none.
        self.spaced_colons = bool(_IS_SPACE[before].any())
        self._last = self.bytes[self._colons - 2] if self._colons.size else np.zeros(0, np.uint8)

    def of(self, name: str) -> np.ndarray:
        """The positions of the ``:`` after each ``"name"`` key, as a compact JSON writer writes it."""
        key = orjson.dumps(name)
        width = len(key)
        at = self._colons[self._last == key[-2]]  # the key's last character: most keys differ there
        at = at[at >= width]
        if at.size:
            at = at[byte_items(self.bytes, width)[at - width] == key]  # a key ends with a quote
        return at

    def value_starts(self, at: np.ndarray) -> np.ndarray:
        """The first byte of each key's value (0 where the page ends first)."""
        after = at + 1
        starts = np.zeros(len(at), dtype=np.uint8)
        inside = after < len(self.bytes)
        starts[inside] = self.bytes[after[inside]]
        return starts

    def written_as_float(self, at: np.ndarray) -> np.ndarray | None:
        """Per key whose value is a number, whether the number is written with a fraction or an
        exponent; None when a token is too long to tell here (the page then goes the general way)."""
        floats = np.zeros(len(at), dtype=bool)
        undecided = np.arange(len(at))
        for width in _NUMBER_WIDTHS:  # most numbers are short: look a little way first
            if not undecided.size:
                return floats
            window = self._following(at[undecided], width)
            ends = _IS_TOKEN_END[window]
            ended = ends.any(axis=1)
            first_end = ends.argmax(axis=1)
            marks = _IS_FLOAT_MARK[window] & (np.arange(width) < first_end[:, None])
            floats[undecided[ended]] = marks[ended].any(axis=1)
            undecided = undecided[~ended]
        return None if undecided.size else floats

    def _following(self, at: np.ndarray, width: int) -> np.ndarray:
        """The `width` bytes after each position, padded with a token end past the page's end."""
        source = self.bytes
        if int(at.max()) + 1 + width > len(source):
            source = np.concatenate((source, np.full(width + 1, ord(" "), dtype=np.uint8)))
        return byte_windows(source, at + 1, width)

    def with_suffixes(self, inserts: list[tuple[int, bytes]]) -> bytes:
        """The body with each ``(position, suffix)``'s suffix inserted before that position."""
        if not inserts:
            return self.body
        view, done = memoryview(self.body), 0
        pieces: list[bytes | memoryview] = []
        for position, suffix in sorted(inserts):
            pieces += (view[done:position], suffix)
            done = position
        pieces.append(view[done:])
        return b"".join(pieces)

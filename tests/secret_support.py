"""Looking for the API key the way it leaks: plain, or percent-encoded as a URL carries it.

The forms are derived here from the standard library, not from the provider's own `secret_forms`,
so a form the provider forgets to scrub is still looked for.
"""

from __future__ import annotations

import re
import traceback
from urllib.parse import quote, quote_plus

# Every character a query string must encode, so each encoded form differs from the key.
KEY_WITH_URL_CHARACTERS = "k3y/with+plus&amp=eq%25 and space"


def leak_forms(secret: str) -> set[str]:
    """`secret`, and it percent-encoded by quote and quote_plus ('/' kept or not), in upper and lower hex."""
    forms = {secret}
    for encode in (quote, quote_plus):
        for safe in ("", "/"):
            encoded = encode(secret, safe=safe)
            forms |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)}
    return forms


def assert_secret_absent(text: str | bytes, where: str, *secrets: str) -> None:
    """No form of any of `secrets` is in `text`."""
    for secret in secrets:
        for form in leak_forms(secret):
            needle: str | bytes = form.encode() if isinstance(text, bytes) else form
            assert needle not in text, f"the API key ({form!r}) is in {where}"


def exception_chain_text(error: BaseException) -> str:
    """str, repr, args and traceback of the error and of every cause and context, suppressed or not.

    Walks ``__context__`` even where ``raise ... from None`` hides it from a formatted traceback:
    the object is still reachable (by a debugger, Sentry, a logging handler that walks it).
    """
    texts, seen = [], set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        texts += [repr(arg) for arg in current.args]
        pending += [current.__cause__, current.__context__]
    return "\n".join(texts)


def chain_length(error: BaseException) -> int:
    """How many exceptions hang together through ``__cause__`` and ``__context__``."""
    count, current, seen = 0, [error], set()
    while current:
        link = current.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        count += 1
        current += [e for e in (link.__cause__, link.__context__) if e is not None]
    return count

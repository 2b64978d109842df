"""Which strings the API stores, and how it shows one that slipped in anyway.

A lone UTF-16 surrogate (`\\ud800`) survives JSON parsing in Python but cannot be
encoded as UTF-8: stored, it would break every response that contains it. Control
characters (C0 but tab/newline/carriage return, DEL, C1) have no place in names or
spec values, and PostgreSQL refuses NUL.
"""

import re
from typing import Any

_FORBIDDEN = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def text_fault(value: str) -> str | None:
    """Why `value` may not be stored (a lone surrogate or a control character), or None."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    char = match.group()
    kind = "a lone UTF-16 surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"contains {kind} (U+{ord(char):04X}) at index {match.start()}"


def scrub_text(value: str) -> str:
    """`value` with lone surrogates replaced by U+FFFD, so it always encodes as UTF-8."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# Deeper stored values are shown as a marker: serializers give up around 255 levels.
SHOWN_DEPTH = 64
TOO_DEEP = "<nested too deeply to show>"


def scrub_json(value: Any, depth: int = 0) -> Any:
    """A JSON value with every string (keys too) passed through `scrub_text` and every
    container deeper than SHOWN_DEPTH replaced by TOO_DEEP."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict | list) and depth >= SHOWN_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {scrub_text(str(k)): scrub_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v, depth + 1) for v in value]
    return value

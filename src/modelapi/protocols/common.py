"""JSON values in words, for the codecs' error messages."""

from __future__ import annotations

from typing import Any


def describe(value: Any, *, definite: bool = False) -> str:
    """A JSON value in words: ``string 'abc'``, ``number 1.5``, ``boolean true``, ``null``, ``an array of length
    2``, ``an object``. With ``definite`` a string, number or boolean reads ``the string 'abc'`` and so on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        words = f"boolean {'true' if value else 'false'}"
    elif isinstance(value, str):
        words = f"string {value[:40]!r}"
    elif isinstance(value, int | float):
        words = f"number {value!r}"[:50]
    elif isinstance(value, list):
        return f"an array of length {len(value)}"
    elif isinstance(value, dict):
        return "an object"
    else:
        return type(value).__name__
    return f"the {words}" if definite else words

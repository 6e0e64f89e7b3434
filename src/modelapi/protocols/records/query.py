"""Query strings -> the data plane's request: ``GET /models/{name}/predict?feature=value&...`` predicts one row.

Each value is parsed by its input's datatype (``parse_text``, which jobs also use for text cells in a CSV), then
checked by the same rules as a friendly JSON record's value (``records.value_problem``). Only scalar inputs can be
given; a model with array inputs takes a POSTed record instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ...datatypes import json_type
from ...errors import InvalidInput
from ...inference import InferenceRequest
from ...signature import Signature, TensorSpec
from ..records.codec import check_names, column, value_problem

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d{1,40}")
_NULLS = ("", "null", "nan", "NaN")


def decode_query(items: Sequence[tuple[str, str]], signature: Signature) -> InferenceRequest:
    """Query parameters (``[(key, value), ...]``) -> a one-row request; values parsed by datatype."""
    nested = [s for s in signature.inputs if s.row_shape]
    if nested:
        raise InvalidInput(
            "GET only supports scalar features in the query string, but input "
            + ", ".join(f"'{s.name}' has shape {list(s.shape)}" for s in nested)
            + "; POST a JSON record instead"
        )
    given: dict[str, str] = {}
    repeated: list[str] = []
    for key, value in items:
        if key in given and key not in repeated:
            repeated.append(key)
        given[key] = value
    if repeated:
        raise InvalidInput(
            f"query parameter {', '.join(repr(k) for k in repeated)} given more than once; a GET predicts one row, "
            "so give each feature once (POST a list of records for several rows)"
        )
    try:
        check_names(given, signature, "query string", "parameters")
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.detail}; example: ?{example_query(signature)}", field=exc.field) from None
    inputs = {}
    for spec in signature.inputs:
        value = parse_text(spec, given[spec.name])
        if isinstance(value, str) and json_type(spec.datatype) == "number" and _nonfinite(value):
            raise InvalidInput(
                f"query parameter '{spec.name}' expected a finite number, got {value[:40]!r}", field=spec.name
            )
        problem = value_problem(spec, value)
        if problem is not None:
            raise InvalidInput(f"query parameter {problem}", field=spec.name)
        inputs[spec.name] = column(spec, [value])
    return InferenceRequest(inputs)


def parse_text(spec: TensorSpec, text: str) -> Any:
    """A query-string value by datatype; an unparseable one is returned as the string (and rejected later)."""
    kind = json_type(spec.datatype)
    if kind == "string":
        return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    text = text.strip()
    if spec.allow_nonfinite and kind == "number" and text in _NULLS:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    return text


def _nonfinite(text: str) -> bool:
    """Whether ``text`` reads as NaN or an infinity (``nan``, ``-inf``, ``1e999``...)."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def example_query(signature: Signature) -> str:
    parts = []
    for spec in signature.inputs:
        value = spec.example_value()
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f"{spec.name}={text}")
    return "&".join(parts)

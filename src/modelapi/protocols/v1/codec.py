"""KServe V1 / TensorFlow Serving JSON <-> the data plane's request and answer.

Row format, ``{"instances": [...]}`` answered with ``{"predictions": [...]}``. An instance is one of:

* an object of input name -> row value (any model);
* a list of feature values in signature order (models whose inputs are all 1-D columns, e.g. tabular
  models with named features);
* the row value itself (single-input models, e.g. ``input`` of shape ``[-1, 4]``).

For models whose inputs are all 1-D (tabular), an item may also be a block of rows, as KServe's runtimes read
them with pandas: an object of input name -> list of values (or -> object of row index -> value, what
``DataFrame.to_dict()`` writes), or a list of objects of named inputs.

Columnar format, ``{"inputs": ...}`` answered with ``{"outputs": ...}`` as TensorFlow Serving does: an object
of input name -> list of rows, or (single-input models) the list of rows itself. KServe reads a list under
``inputs`` as it reads ``instances``, so a list under ``inputs`` for a model with several inputs, or one that
holds objects, is read as instances and answered with ``{"predictions": ...}``. ``signature_name`` (TensorFlow
Serving's) must be a string and is otherwise ignored: a model here has one signature.

A prediction is the primary output's row value (``prediction``, else ``label``, else the first output), so a
classifier answers its labels, as KServe's scikit-learn server does. A request that sets ``"outputs": [names]``
gets an object of those outputs per row instead (columnar: an object of output name -> list of rows). Values
are raw (probabilities are lists in label order); NaN/Infinity become null. TensorFlow's ``{"b64": ...}``
binary values are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InvalidInput
from ...inference import InferenceRequest, InferenceResponse
from ...signature import Signature
from ..columns import fast_column
from ..common import check_row_limit, describe, primary_output, to_plain
from ..records.codec import check_names, check_rows, column, value_problem

#: keys a request may carry besides ``instances``/``inputs``; ``signature_name`` and ``parameters`` are ignored
_OPTIONAL_KEYS = {"outputs", "signature_name", "parameters"}


@dataclass
class V1Request:
    request: InferenceRequest
    columnar: bool


def decode(body: Any, signature: Signature, *, max_rows: int | None = None) -> V1Request:
    if not isinstance(body, dict):
        raise InvalidInput(
            f'expected a JSON object with "instances" (a list, one item per row) or "inputs" (columnar); '
            f"got {describe(body)}"
        )
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        which = "both" if has_rows else "neither"
        raise InvalidInput(f'the request has {which} of "instances" and "inputs"; send exactly one')
    unknown = [k for k in body if k not in _OPTIONAL_KEYS | {"instances", "inputs"}]
    if unknown:
        raise InvalidInput(
            f"unknown field {', '.join(repr(k) for k in unknown[:20])}; "
            'expected "instances" or "inputs", and optionally "outputs"'
        )
    if not isinstance(body.get("parameters", {}), dict):
        raise InvalidInput(f'"parameters" expected an object, got {describe(body["parameters"])}')
    if not isinstance(body.get("signature_name", ""), str):
        raise InvalidInput(f'"signature_name" expected a string, got {describe(body["signature_name"])}')
    outputs = _outputs(body.get("outputs"))
    columnar = False
    if has_rows:
        inputs = _instances(body["instances"], signature, max_rows, '"instances"')
    elif _kserve_rows(body["inputs"], signature):
        inputs = _instances(body["inputs"], signature, max_rows, '"inputs"')
    else:
        inputs = _columns(body["inputs"], signature, max_rows)
        columnar = True
    return V1Request(InferenceRequest(inputs, outputs=outputs), columnar=columnar)


def _kserve_rows(value: Any, signature: Signature) -> bool:
    """A list under ``inputs`` that only KServe's reading (rows, like ``instances``) makes sense of."""
    return isinstance(value, list) and (len(signature.inputs) != 1 or any(type(v) is dict for v in value))


def _outputs(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f'"outputs" expected a non-empty list of output names, got {describe(value)}')
    return list(dict.fromkeys(value))


def _instances(instances: Any, signature: Signature, max_rows: int | None, key: str) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        got = "an empty list" if instances == [] else describe(instances)
        raise InvalidInput(f"{key} expected a non-empty list, one item per row; got {got}")
    check_row_limit(len(instances), max_rows, "instances")
    specs = signature.inputs
    names = signature.input_names
    all_columns = all(not s.row_shape for s in specs)
    columns: dict[str, list[Any]] = {n: [] for n in names}
    blocks = False
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            if len(instance) != len(names) or not all(n in instance for n in names):
                check_names(instance, signature, f"instance {i}", "inputs")
            if all_columns and type(instance[names[0]]) in (list, dict):  # a block of rows (pandas)
                blocks = True
                for n, values in _block(instance, names, i).items():
                    columns[n].extend(values)
                continue
            for n in names:
                columns[n].append(instance[n])
        elif all_columns and isinstance(instance, list) and instance and type(instance[0]) is dict:
            blocks = True  # a list of records (pandas reads it as rows)
            for j, record in enumerate(instance):
                if not isinstance(record, dict):
                    raise InvalidInput(
                        f"instance {i}: item {j} expected an object of named inputs, got {describe(record)}"
                    )
                check_names(record, signature, f"instance {i} item {j}", "inputs")
                for n in names:
                    columns[n].append(record[n])
        elif all_columns and isinstance(instance, list):
            if len(instance) != len(names):
                raise InvalidInput(
                    f"instance {i}: expected {len(names)} feature values in this order: {', '.join(names)}; "
                    f"got {describe(instance)}"
                )
            for n, value in zip(names, instance, strict=True):
                columns[n].append(value)
        elif len(specs) == 1:
            columns[names[0]].append(instance)
        else:
            shape = "a list of feature values in signature order or " if all_columns else ""
            raise InvalidInput(
                f"instance {i}: expected {shape}an object of named inputs ({', '.join(names)}); "
                f"got {describe(instance)}"
            )
    if blocks:
        check_row_limit(len(columns[names[0]]), max_rows, "rows")
    inputs = {}
    for spec in specs:
        arr = fast_column(spec, columns[spec.name])
        if arr is None:  # something to look at element by element: the checked path names it
            check_rows(spec, columns[spec.name], "instance")
            arr = column(spec, columns[spec.name])
        inputs[spec.name] = arr
    return inputs


def _block(instance: dict[str, Any], names: list[str], i: int) -> dict[str, list[Any]]:
    """One instance that holds several rows: input name -> list of values, or -> {row index: value}."""
    first = instance[names[0]]
    if isinstance(first, dict):
        index = list(first)
        for n in names:
            values = instance[n]
            if not isinstance(values, dict) or values.keys() != first.keys():
                shown = ", ".join(repr(k) for k in index[:10])
                raise InvalidInput(
                    f"instance {i}: '{n}' expected an object with the row indexes of '{names[0]}' ({shown}), "
                    f"got {describe(values)}"
                )
        return {n: [instance[n][k] for k in index] for n in names}  # rows in the first input's index order
    for n in names:
        values = instance[n]
        if not isinstance(values, list) or len(values) != len(first):
            raise InvalidInput(
                f"instance {i}: '{n}' expected a list of {len(first)} values, one per row as for "
                f"'{names[0]}', got {describe(values)}"
            )
    return {n: instance[n] for n in names}


def _columns(value: Any, signature: Signature, max_rows: int | None) -> dict[str, Any]:
    names = signature.input_names
    if isinstance(value, dict):
        check_names(value, signature, '"inputs"', "inputs")
        batches = value
    elif len(names) == 1:
        batches = {names[0]: value}
    else:
        raise InvalidInput(f'"inputs" expected an object of input name -> list of rows ({", ".join(names)})')
    inputs = {}
    rows: int | None = None
    for spec in signature.inputs:
        batch = batches[spec.name]
        if not isinstance(batch, list) or not batch:
            got = "an empty list" if batch == [] else describe(batch)
            raise InvalidInput(f"input '{spec.name}': expected a non-empty list of rows, got {got}")
        check_row_limit(len(batch), max_rows)
        if rows is not None and len(batch) != rows:
            raise InvalidInput(f"input '{spec.name}': has {len(batch)} rows but '{names[0]}' has {rows}")
        rows = len(batch)
        for i, row in enumerate(batch):
            problem = value_problem(spec, row)
            if problem is not None:
                raise InvalidInput(f"row {i}: {problem}")
        inputs[spec.name] = column(spec, batch)
    return inputs


def encode(response: InferenceResponse, signature: Signature, request: V1Request) -> dict[str, Any]:
    wanted = request.request.outputs
    if wanted is None:
        primary = primary_output(signature)
        values = to_plain(response.outputs[primary]) if primary is not None and primary in response.outputs else []
        return {"outputs": values} if request.columnar else {"predictions": values}
    columns = {name: to_plain(response.outputs[name]) for name in wanted}
    if request.columnar:
        return {"outputs": columns}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{name: values[i] for name, values in columns.items()} for i in range(rows)]}

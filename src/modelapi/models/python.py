"""A user's own model class, named ``package.module:ClassName`` and imported like any Python code."""

from __future__ import annotations

import importlib
import os
import re
import sys

from ..errors import ModelLoadError
from ..signature import Signature
from .base import Model

#: ``package.module:ClassName``
SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")

_EXAMPLE = "e.g. mypackage.models:MyModel"


def is_class_spec(spec: str) -> bool:
    return SPEC.match(spec) is not None


def load_class(spec: str) -> Model:
    """Import ``module:Class``, check it is a ``Model`` with a signature, and instantiate it with no arguments.

    The current directory is importable, as it is for ``python -m``, so a ``mymodel.py`` next to where the
    command runs can be named ``mymodel:MyModel``.
    """
    match = SPEC.match(spec)
    if match is None:
        raise ModelLoadError(f"{spec!r} is not a Python class spec 'package.module:ClassName' ({_EXAMPLE})")
    module_name, attr = match["module"], match["attr"]
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ModelLoadError(
                f"cannot load {spec!r}: no module named '{missing}' (looked in the current directory and "
                "installed packages); check the spelling or install it"
            ) from exc
        raise ModelLoadError(f"cannot load {spec!r}: importing '{module_name}' failed: {exc}") from exc
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ModelLoadError(f"cannot load {spec!r}: importing '{module_name}' failed: {why}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ModelLoadError(f"cannot load {spec!r}: module '{module_name}' has no attribute '{attr}'")
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelLoadError(
            f"cannot load {spec!r}: '{attr}' is not a subclass of modelapi.Model; "
            "subclass Model, declare `signature`, and implement predict(inputs)"
        )
    try:
        model = cls()
    except Exception as exc:
        raise ModelLoadError(f"cannot load {spec!r}: {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(getattr(model, "signature", None), Signature):
        raise ModelLoadError(
            f"cannot load {spec!r}: {attr} has no signature; declare one, e.g. "
            "signature = Signature.from_features({'x': 'FP64'}, outputs=[TensorSpec('y')])"
        )
    if not isinstance(getattr(model, "info", None), dict):
        model.info = {}
    model.info = {"format": "python", "source": spec, **model.info}
    return model

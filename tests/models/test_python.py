from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelapi.errors import ModelLoadError
from modelapi.models.python import is_class_spec, load_class

_counter = itertools.count()

GOOD = """
    from modelapi.models.base import Model
    from modelapi.signature import Signature, TensorSpec

    class Doubler(Model):
        signature = Signature.from_features({"x": "FP64"}, outputs=[TensorSpec("y")])
        info = {"author": "me"}

        def predict(self, inputs):
            return {"y": inputs["x"] * 2}

    class NoSignature(Model):
        def predict(self, inputs):
            return {}

    class Broken(Doubler):
        def __init__(self):
            raise RuntimeError("weights missing")

    class NotAModel:
        pass
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a uniquely named module into an importable directory; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"user_models_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_loads_a_model_class(module: Callable[[str], str]) -> None:
    name = module(GOOD)
    model = load_class(f"{name}:Doubler")
    assert model.platform == "python"
    assert model.info == {"format": "python", "source": f"{name}:Doubler", "author": "me"}
    np.testing.assert_array_equal(model.predict({"x": np.array([1.0, 2.5])})["y"], [2.0, 5.0])


def test_spec_shape() -> None:
    assert is_class_spec("pkg.mod:Cls")
    assert not is_class_spec("model.skops")
    assert not is_class_spec("pkg.mod:Cls:extra")
    with pytest.raises(ModelLoadError, match=r"package\.module:ClassName"):
        load_class("not a spec")


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("Missing", "has no attribute 'Missing'"),
        ("NotAModel", "'NotAModel' is not a subclass of modelapi.Model"),
        ("NoSignature", "NoSignature has no signature"),
        ("Broken", r"Broken\(\) failed: RuntimeError: weights missing"),
    ],
)
def test_class_errors(module: Callable[[str], str], attr: str, message: str) -> None:
    name = module(GOOD)
    with pytest.raises(ModelLoadError, match=message):
        load_class(f"{name}:{attr}")


def test_missing_module() -> None:
    with pytest.raises(ModelLoadError, match="no module named 'no_such_module_xyz'"):
        load_class("no_such_module_xyz.sub:Model")


def test_module_whose_own_import_fails(module: Callable[[str], str]) -> None:
    name = module("import no_such_dependency_xyz\n")
    with pytest.raises(ModelLoadError, match=f"importing '{name}' failed: No module named 'no_such_dependency_xyz'"):
        load_class(f"{name}:Anything")


def test_module_that_raises_on_import(module: Callable[[str], str]) -> None:
    name = module("raise ValueError('bad config')\n")
    with pytest.raises(ModelLoadError, match="ValueError: bad config"):
        load_class(f"{name}:Anything")

"""The model contract every loader, and a user's own class, implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..signature import Signature


class Model:
    """A servable model.

    Subclass it, declare ``signature``, and implement ``predict``::

        class Doubler(Model):
            signature = Signature.from_features({"x": "FP64"}, outputs=[TensorSpec("y")])

            def load(self) -> None:        # optional: runs once before the model turns ready
                self.factor = 2.0

            def predict(self, inputs):     # numpy arrays in, numpy arrays out; first axis: rows
                return {"y": inputs["x"] * self.factor}

    ``predict`` always receives a batch that already passed ``signature.validate``; it returns one array per
    output with the same number of rows.
    """

    signature: Signature
    #: a short word for the format, shown in metadata ("sklearn", "onnx", "python", ...)
    platform: ClassVar[str] = "python"
    name: str = ""
    version: str = "1"
    #: free-form facts shown by ``modelapi inspect`` and in model metadata (source path, estimator, ...)
    info: dict[str, Any]

    def load(self) -> None:
        """Load weights or warm up. Called once, before the model is marked ready."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        raise NotImplementedError

    def unload(self) -> None:
        """Release resources. Called at shutdown."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "platform": self.platform,
            **self.signature.to_dict(),
            **({"info": self.info} if getattr(self, "info", None) else {}),
        }

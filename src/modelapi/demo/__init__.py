"""The bundled demo model: an iris classifier saved with skops, served when no model is named.

``iris.examples.json`` beside it holds the first iris row, used as the example values in the API docs.
Rebuild both with ``python -m modelapi.demo.train``.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_PATH: Path = Path(__file__).resolve().parent / "iris.skops"

__all__ = ["DEMO_MODEL_PATH"]

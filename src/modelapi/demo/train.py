"""Train the demo iris classifier, reproducibly and offline: ``python -m modelapi.demo.train [OUT]``.

Uses the iris data that ships inside scikit-learn. Writes ``OUT`` (default: the bundled ``iris.skops``) and
``<stem>.examples.json`` beside it, holding the first row as example inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import DEMO_MODEL_PATH

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def train() -> tuple[Any, dict[str, float]]:
    """The fitted pipeline, and the first iris row as ``{feature: value}``."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris(as_frame=True)
    X = iris.data.set_axis(FEATURES, axis=1)
    y = np.asarray(iris.target_names, dtype=object)[iris.target.to_numpy()]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)).fit(X, y)
    first = {name: float(X.iloc[0][name]) for name in FEATURES}
    return model, first


def main(argv: list[str] | None = None) -> int:
    import skops.io as sio

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEMO_MODEL_PATH
    model, first = train()
    sio.dump(model, out)
    examples = out.with_name(out.stem + ".examples.json")
    examples.write_text(json.dumps({"inputs": first}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} and {examples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small data sets and helpers shared by the loader tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    """A tabular data set with a numeric, a string categorical and an integer categorical column."""
    rng = np.random.RandomState(0)
    n = 60
    df = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n).round(1),
            "city": rng.choice(["paris", "lyon", "nice"], n).astype(object),
            "plan": rng.choice([1, 2, 3], n).astype(np.int64),
        }
    )
    y = np.where((df["age"] > 45) ^ (df["city"] == "nice"), "yes", "no").astype(object)
    return df, y


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(1)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    return X, y

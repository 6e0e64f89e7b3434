"""Build model repositories on disk for tests: ``DIR/<name>/<version>/model.skops`` of tiny, real models.

Each version is a scikit-learn ``DummyClassifier`` that always predicts its own version number (classes 0-9,
one feature ``x``), so an answer's content says which version produced it::

    from helpers.model_repo import publish_version, write_config
    publish_version(root, "m", 1)                   # written to m/1.tmp/, then renamed to m/1/
    write_config(root, "m", 'version_policy = "all"')
    # POST /models/m/predict {"x": 0} -> {"prediction": 1, ...} with the header Model-Version: 1

Versions are published the way an operator is told to (write elsewhere, then rename into place), so a server
following the directory (``--watch``) never sees half a version.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

CLASSES = 10  # a version's prediction is its number, so versions 1-9 are distinguishable


@functools.cache
def model_bytes(constant: int) -> bytes:
    """A ``.skops`` file of a classifier that answers ``constant`` for every row (trained here, once)."""
    import numpy as np
    import pandas as pd
    import skops.io as sio
    from sklearn.dummy import DummyClassifier

    if not 0 <= constant < CLASSES:
        raise ValueError(f"constant must be in 0..{CLASSES - 1}")
    features = pd.DataFrame({"x": np.arange(float(CLASSES))})
    model = DummyClassifier(strategy="constant", constant=constant).fit(features, np.arange(CLASSES))
    buffer = io.BytesIO()
    sio.dump(model, buffer)
    return buffer.getvalue()


def publish_version(root: Path, name: str, version: int, *, data: bytes | None = None) -> Path:
    """Write ``root/name/version.tmp/model.skops`` (``data``, default a model predicting ``version``), then rename
    it to ``root/name/version/``; returns the version directory."""
    final = root / name / str(version)
    staging = root / name / f"{version}.tmp"
    staging.mkdir(parents=True)
    artefact = staging / "model.skops"
    artefact.write_bytes(model_bytes(version) if data is None else data)
    with artefact.open("rb") as f:
        os.fsync(f.fileno())
    os.rename(staging, final)
    return final


def publish_corrupt_version(root: Path, name: str, version: int) -> Path:
    """A version whose ``model.skops`` is not a skops file at all (it cannot load)."""
    return publish_version(root, name, version, data=b"this is not a zip archive\n" * 20)


def write_config(root: Path, name: str, text: str) -> Path:
    """``root/name/model.toml`` = ``text``, replaced atomically (written to ``model.toml.tmp`` first)."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / "model.toml.tmp"
    staging.write_text(text)
    target = directory / "model.toml"
    os.replace(staging, target)
    return target


def make_repository(root: Path, models: dict[str, list[int]], configs: dict[str, str] | None = None) -> Path:
    """A repository at ``root`` with ``models`` (name -> versions) and their ``model.toml`` texts."""
    root.mkdir(parents=True, exist_ok=True)
    for name, versions in models.items():
        for version in versions:
            publish_version(root, name, version)
    for name, text in (configs or {}).items():
        write_config(root, name, text)
    return root

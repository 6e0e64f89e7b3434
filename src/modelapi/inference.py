"""The data plane's own request and answer: numpy arrays keyed by tensor name, no wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class InferenceRequest:
    """Inputs keyed by name (first axis: rows), and which outputs the caller wants (``None``: all)."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

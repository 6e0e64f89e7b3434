"""Manifests as plain dicts with a comment each, written as YAML (PyYAML) to stdout or one file per manifest."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

# Kubernetes object names: a DNS-1035 label (a Service's name must be one), which also satisfies DNS-1123
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_RULE = "lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, at most 63"


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the comment written above it (why it is set as it is)."""

    body: dict[str, Any]
    comment: str = ""

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def filename(self) -> str:
        return f"{self.kind.lower()}.yaml"

    def to_yaml(self) -> str:
        lines = [f"# {line}".rstrip() for line in self.comment.strip().splitlines()] if self.comment else []
        text = yaml.safe_dump(self.body, sort_keys=False, default_flow_style=False, width=120)
        return "\n".join([*lines, text.rstrip("\n")]) + "\n"


def check_name(name: str, what: str = "--name") -> str:
    if _NAME.match(name) is None:
        raise ValueError(f"{what}: {name!r} is not a Kubernetes object name ({NAME_RULE} characters)")
    return name


# a Kubernetes resource quantity: a number with an optional decimal SI or binary suffix (250m, 1.5, 512Mi, 2G)
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([mkMGTPE]|[KMGTPE]i|[eE][+-]?\d+)?$")


def check_quantity(value: str, what: str, example: str) -> str:
    """A CPU or memory amount Kubernetes accepts; a typo would otherwise fail only at ``kubectl apply``."""
    if _QUANTITY.match(value) is None or not float(re.sub(r"[^\d.]+$", "", value) or "0"):
        raise ValueError(f"{what}: {value!r} is not a Kubernetes quantity above 0; expected e.g. {example}")
    return value


def name_from(path: str) -> str:
    """A Kubernetes name from a model path: its file stem, lowercased, other characters turned into '-'."""
    stem = Path(path.rstrip("/")).stem or "modelapi"
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:63].rstrip("-")
    if not name or not name[0].isalpha():
        name = f"modelapi-{name}".rstrip("-")[:63].rstrip("-")
    return name


def check_image(image: str) -> str:
    """An image that names a tag or digest other than ``latest``: a rollout must be reproducible."""
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" in image:
        return image
    if ":" not in last or last.endswith(":latest"):
        raise ValueError(
            f"--image: {image!r} names no version; give a tag other than latest or a digest, e.g. "
            "registry.example.com/modelapi:0.1.0 or ...@sha256:<hex>"
        )
    return image


def dump(manifests: Sequence[Manifest]) -> str:
    """All manifests as one YAML stream (``kubectl apply -f -``)."""
    return "---\n".join(m.to_yaml() for m in manifests)


def write(manifests: Sequence[Manifest], output: str, out: TextIO | None = None) -> list[Path]:
    """``output`` ``-``: one stream to ``out`` (stdout); else a directory, one ``<kind>.yaml`` per manifest."""
    if output == "-":
        (out or sys.stdout).write(dump(manifests))
        return []
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for manifest in manifests:
        path = directory / manifest.filename
        path.write_text(manifest.to_yaml())
        written.append(path)
    return written

"""Pickle trust: loading a pickle (or joblib) file runs whatever code it carries.

modelapi loads such a file only when the operator says so: ``--trust-pickle`` trusts every pickle file, and
``--sha256 <digest>`` trusts exactly the files with that content. The digest is computed from the same open
file that is then unpickled, so the file cannot be swapped between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UntrustedModel

_CHUNK = 1024 * 1024


def sha256_of(fh: BinaryIO) -> str:
    """The SHA-256 hex digest of a binary file, read in chunks from its current position."""
    digest = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Trust:
    """What the operator trusts: every pickle file, or only files with a pinned SHA-256 digest."""

    trust_pickle: bool = False
    sha256: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        digests: Iterable[str] = self.sha256
        object.__setattr__(self, "sha256", frozenset(d.strip().lower() for d in digests))

    def check_pickle(self, path: str | Path) -> None:
        """Raise ``UntrustedModel`` unless the pickle-based file at ``path`` is trusted."""
        with open(path, "rb") as fh:
            self.check_pickle_file(fh, path)

    def check_pickle_file(self, fh: BinaryIO, path: str | Path) -> str:
        """Check an open pickle-based file from its start; return its digest. Leaves ``fh`` at the end."""
        fh.seek(0)
        digest = sha256_of(fh)
        if self.trust_pickle or digest in self.sha256:
            return digest
        if self.sha256:
            why = f"its sha256 {digest} matches none of the pinned digests (--sha256 / MODELAPI_SHA256)"
        else:
            why = f"its sha256 is {digest}"
        raise UntrustedModel(
            f"refusing to load {path}: it is a pickle-based file, and loading a pickle runs any code it contains; "
            f"{why}. If you trust this file, pass --trust-pickle, or pin its content with --sha256 {digest} "
            f"(environment: MODELAPI_TRUST_PICKLE=true, or MODELAPI_SHA256='{json.dumps([digest])}'). "
            "A .skops file needs no trust."
        )

    def describe(self, digest: str) -> str:
        """How a file with this digest came to be trusted, for model metadata."""
        return "pinned sha256" if digest in self.sha256 else "--trust-pickle"

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelapi.errors import UntrustedModel
from modelapi.models.trust import Trust


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str]:
    data = bytes(range(256)) * 9000  # over two read chunks
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_refused_without_trust_and_says_how_to_trust(blob: tuple[Path, str]) -> None:
    path, digest = blob
    with pytest.raises(UntrustedModel) as info:
        Trust().check_pickle(path)
    msg = str(info.value)
    assert "pickle-based" in msg
    assert "runs any code" in msg
    assert digest in msg
    assert "--trust-pickle" in msg
    assert f"--sha256 {digest}" in msg
    assert "MODELAPI_TRUST_PICKLE=true" in msg
    assert f"MODELAPI_SHA256='{json.dumps([digest])}'" in msg


def test_trust_pickle_trusts_any_file(blob: tuple[Path, str]) -> None:
    Trust(trust_pickle=True).check_pickle(blob[0])


def test_pinned_digest_is_trusted_in_any_case(blob: tuple[Path, str]) -> None:
    path, digest = blob
    Trust(sha256=frozenset({digest})).check_pickle(path)
    Trust(sha256=frozenset({digest.upper()})).check_pickle(path)


def test_wrong_pinned_digest_is_refused(blob: tuple[Path, str]) -> None:
    path, digest = blob
    with pytest.raises(UntrustedModel, match="matches none of the pinned digests") as info:
        Trust(sha256=frozenset({"0" * 64})).check_pickle(path)
    assert digest in str(info.value)


def test_check_pickle_file_returns_the_digest_of_the_whole_file(blob: tuple[Path, str]) -> None:
    path, digest = blob
    with open(path, "rb") as fh:
        fh.read(10)  # checking starts from the beginning wherever the file stands
        assert Trust(trust_pickle=True).check_pickle_file(fh, path) == digest


def test_describe_says_how_the_file_was_trusted(blob: tuple[Path, str]) -> None:
    digest = blob[1]
    assert Trust(sha256=frozenset({digest})).describe(digest) == "pinned sha256"
    assert Trust(trust_pickle=True).describe(digest) == "--trust-pickle"

"""The repository scan: layout rules, recorded (never raised) problems, fingerprints, version selection."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

from modelapi.errors import ModelLoadError
from modelapi.repository.config import ModelConfig, VersionPolicy
from modelapi.repository.layout import (
    ModelSource,
    RepositoryScan,
    VersionSource,
    is_repository,
    scan,
    scan_model,
)


def put(root: Path, relpath: str, content: bytes = b"model bytes") -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def files(fingerprint: Hashable) -> list[str]:
    """The relpaths a version fingerprint covers."""
    assert isinstance(fingerprint, tuple)
    return [entry[0] for entry in fingerprint]


def test_version_directories(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2/model.onnx")
    put(tmp_path, "iris/2/model.examples.json", b'{"inputs": {}}')
    put(tmp_path, "iris/2/model.signature.json", b"{}")
    put(tmp_path, "iris/10/model.joblib")
    result = scan(tmp_path)
    assert isinstance(result, RepositoryScan)
    assert result.root == tmp_path.absolute()
    assert result.errors == ()
    iris = result.models["iris"]
    assert iris.name == "iris"
    assert iris.directory == tmp_path / "iris"
    assert iris.config == ModelConfig()
    assert iris.config_fingerprint is None
    assert iris.error is None
    assert iris.errors == {}
    assert list(iris.versions) == [1, 2, 10]
    v2 = iris.versions[2]
    assert isinstance(v2, VersionSource)
    assert v2.version == 2
    assert v2.artefact == tmp_path / "iris/2/model.onnx"
    assert v2.artefact.is_absolute()
    assert v2.relpath == "iris/2/model.onnx"
    assert iris.versions[10].relpath == "iris/10/model.joblib"
    assert iris.selected() == [10]  # the default policy: the latest one


def test_sidecars_are_part_of_the_version_fingerprint(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/1/model.examples.json", b"{}")
    fingerprint = scan(tmp_path).models["iris"].versions[1].fingerprint
    assert files(fingerprint) == ["iris/1/model.examples.json", "iris/1/model.skops"]


def test_loose_files(tmp_path: Path) -> None:
    put(tmp_path, "churn.skops")
    put(tmp_path, "churn.examples.json", b"{}")  # a sidecar, not a model
    put(tmp_path, "README.md", b"# models")  # not a model file: ignored silently
    put(tmp_path, "wine.v2.onnx")
    result = scan(tmp_path)
    assert result.errors == ()
    assert list(result.models) == ["churn", "wine.v2"]
    churn = result.models["churn"]
    assert churn.directory is None
    assert churn.config == ModelConfig()
    assert churn.config_fingerprint is None
    assert list(churn.versions) == [1]
    assert churn.versions[1].artefact == tmp_path / "churn.skops"
    assert churn.versions[1].relpath == "churn.skops"
    assert files(churn.versions[1].fingerprint) == ["churn.examples.json", "churn.skops"]
    assert churn.selected() == [1]


def test_json_and_txt_are_sniffed(tmp_path: Path) -> None:
    put(tmp_path, "booster.json", b'{"learner": {}}')
    put(tmp_path, "notes.json", b'{"not": "a model"}')
    put(tmp_path, "trees.txt", b"tree\nversion=v4\n")
    put(tmp_path, "todo.txt", b"write docs")
    assert list(scan(tmp_path).models) == ["booster", "trees"]


def test_mlflow_directories(tmp_path: Path) -> None:
    put(tmp_path, "wine/MLmodel", b"flavors: {}\n")
    put(tmp_path, "wine/model.pkl")  # beside MLmodel: part of the MLflow model, not a second artefact
    put(tmp_path, "iris/3/MLmodel", b"flavors: {}\n")
    put(tmp_path, "iris/3/model.pkl")
    put(tmp_path, "iris/3/conda.yaml", b"")
    result = scan(tmp_path)
    assert result.errors == ()
    wine = result.models["wine"]
    assert wine.directory is None
    assert wine.versions[1].artefact == tmp_path / "wine"
    assert wine.versions[1].relpath == "wine"
    assert files(wine.versions[1].fingerprint) == ["wine/MLmodel", "wine/model.pkl"]
    iris = result.models["iris"]
    assert iris.directory == tmp_path / "iris"
    assert iris.versions[3].artefact == tmp_path / "iris/3"
    assert iris.versions[3].relpath == "iris/3"


def test_ignored_names_at_every_level(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2.tmp/model.skops")  # being written: renamed to 2/ when complete
    put(tmp_path, "iris/3.part/model.skops")
    put(tmp_path, "iris/.4/model.skops")
    put(tmp_path, "iris/1/.model.skops.swp")
    put(tmp_path, "iris/1/other.onnx.partial")
    put(tmp_path, "iris/1/other.onnx~")
    put(tmp_path, "iris/1/.cache/blob")
    put(tmp_path, "iris/1/sub.tmp/blob")
    put(tmp_path, ".hidden/1/model.skops")
    put(tmp_path, "churn.skops.part")
    put(tmp_path, "wine.tmp/MLmodel")
    put(tmp_path, ".DS_Store")
    result = scan(tmp_path)
    assert result.errors == ()
    assert list(result.models) == ["iris"]
    iris = result.models["iris"]
    assert list(iris.versions) == [1]
    assert iris.errors == {}
    assert files(iris.versions[1].fingerprint) == ["iris/1/model.skops"]


def test_a_model_whose_first_version_is_being_written(tmp_path: Path) -> None:
    put(tmp_path, "iris/1.tmp/model.skops")
    result = scan(tmp_path)
    assert result.errors == ()
    assert result.models["iris"].versions == {}
    assert result.models["iris"].selected() == []


def test_several_or_no_model_files_in_a_version(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/a.skops")
    put(tmp_path, "iris/1/b.onnx")
    put(tmp_path, "iris/2/notes.md", b"")
    (tmp_path / "iris/3").mkdir()
    put(tmp_path, "iris/4/model.skops")
    iris = scan(tmp_path).models["iris"]
    assert list(iris.versions) == [4]
    assert sorted(iris.errors) == [1, 2, 3]
    assert "iris/1/" in iris.errors[1]
    assert "several model files" in iris.errors[1]
    assert "a.skops" in iris.errors[1] and "b.onnx" in iris.errors[1]
    assert "iris/2/" in iris.errors[2] and "no model file" in iris.errors[2] and "notes.md" in iris.errors[2]
    assert "iris/3/" in iris.errors[3] and "empty" in iris.errors[3]
    assert str(tmp_path) not in "".join(iris.errors.values())  # relative paths only
    assert iris.error is None
    assert iris.selected() == [4]


def test_bad_model_toml_is_recorded_and_versions_still_listed(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2/model.skops")
    put(tmp_path, "iris/model.toml", b"canary_precent = 10\n")
    put(tmp_path, "wine/1/model.skops")
    put(tmp_path, "wine/model.toml", b'[labels]\nstable = "three"\n')
    result = scan(tmp_path)
    iris = result.models["iris"]
    assert iris.config is None
    assert iris.error is not None
    assert iris.error.startswith("iris/model.toml: ")
    assert "canary_precent" in iris.error
    assert list(iris.versions) == [1, 2]
    assert iris.selected() == []  # not served
    assert iris.config_fingerprint is not None
    wine = result.models["wine"]
    assert wine.error is not None
    assert wine.error.startswith("wine/model.toml: labels.stable: ")
    assert str(tmp_path) not in iris.error + wine.error


def test_model_toml_is_read(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2/model.skops")
    put(tmp_path, "iris/model.toml", b'version_policy = "all"\nmax_rows = 5\n')
    iris = scan(tmp_path).models["iris"]
    assert iris.error is None
    assert iris.config is not None
    assert iris.config.max_rows == 5
    assert iris.selected() == [1, 2]
    size = (tmp_path / "iris/model.toml").stat().st_size
    assert iris.config_fingerprint == (size, (tmp_path / "iris/model.toml").stat().st_mtime_ns)


def test_a_directory_with_only_model_toml_is_a_model(tmp_path: Path) -> None:
    put(tmp_path, "iris/model.toml", b"")
    result = scan(tmp_path)
    assert result.errors == ()
    assert result.models["iris"].versions == {}


def test_invalid_names(tmp_path: Path) -> None:
    put(tmp_path, "bad name.skops")
    put(tmp_path, "-dash/1/model.skops")
    put(tmp_path, "ok/1/model.skops")
    put(tmp_path, "bad name.md", b"")  # not a model: no complaint
    result = scan(tmp_path)
    assert list(result.models) == ["ok"]
    assert len(result.errors) == 2
    assert any(e.startswith("bad name.skops: invalid model name 'bad name'") for e in result.errors)
    assert any(e.startswith("-dash/: invalid model name '-dash'") for e in result.errors)


def test_duplicate_names(tmp_path: Path) -> None:
    put(tmp_path, "iris.skops")
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "wine.skops")
    put(tmp_path, "wine.onnx")
    put(tmp_path, "ok.skops")
    result = scan(tmp_path)
    assert list(result.models) == ["ok"]  # neither duplicate is served: picking one could flip between scans
    assert len(result.errors) == 2
    iris_error = next(e for e in result.errors if e.startswith("iris:"))
    assert "iris.skops" in iris_error and "iris/" in iris_error
    wine_error = next(e for e in result.errors if e.startswith("wine:"))
    assert "wine.onnx" in wine_error and "wine.skops" in wine_error
    assert scan_model(tmp_path, "iris") is None
    assert scan_model(tmp_path, "wine") is None


def test_stray_directories(tmp_path: Path) -> None:
    put(tmp_path, "stray/model.skops")  # a model file but no version directory: strict, not guessed
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/old/model.skops")
    put(tmp_path, "iris/01/model.skops")
    put(tmp_path, "iris/model.onnx")
    result = scan(tmp_path)
    assert list(result.models) == ["iris"]
    iris = result.models["iris"]
    assert list(iris.versions) == [1]
    assert iris.errors == {}
    assert iris.error is None
    assert len(iris.warnings) == 3
    assert any(w.startswith("iris/old/: ") for w in iris.warnings)
    assert any(w.startswith("iris/01/: ") for w in iris.warnings)
    assert any(w.startswith("iris/model.onnx: ") for w in iris.warnings)
    assert any(e.startswith("stray/: expected version directories") for e in result.errors)
    assert set(iris.warnings) <= set(result.errors)  # a scan reports every model's warnings too
    assert len(result.errors) == 4


def test_models_are_in_sorted_order(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", "Mid", "beta"):
        put(tmp_path, f"{name}.skops")
    assert list(scan(tmp_path).models) == sorted(["zeta", "alpha", "Mid", "beta"])


def test_fingerprint_is_stable_and_changes_with_the_files(tmp_path: Path) -> None:
    model = put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2/model.skops")
    loose = put(tmp_path, "churn.skops")
    put(tmp_path, "wine/MLmodel", b"flavors: {}\n")

    def fingerprints() -> dict[str, object]:
        result = scan(tmp_path)
        return {
            f"{name}/{v}": version.fingerprint
            for name, model in result.models.items()
            for v, version in model.versions.items()
        }

    before = fingerprints()
    for value in before.values():
        hash(value)
    assert fingerprints() == before

    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = fingerprints()
    assert after["iris/1"] != before["iris/1"]
    assert {k: v for k, v in after.items() if k != "iris/1"} == {k: v for k, v in before.items() if k != "iris/1"}

    before = after
    put(tmp_path, "churn.examples.json", b"{}")  # a sidecar appears
    after = fingerprints()
    assert after["churn/1"] != before["churn/1"]

    before = after
    st = loose.stat()
    loose.write_bytes(b"longer model bytes")
    os.utime(loose, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, other size: still a change
    assert fingerprints()["churn/1"] != before["churn/1"]

    before = fingerprints()
    put(tmp_path, "wine/artifacts/extra.bin", b"x")  # a new file deep inside an MLflow model
    assert fingerprints()["wine/1"] != before["wine/1"]


def test_config_fingerprint_changes_with_model_toml(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    assert scan(tmp_path).models["iris"].config_fingerprint is None
    put(tmp_path, "iris/model.toml", b"max_rows = 5\n")
    first = scan(tmp_path).models["iris"].config_fingerprint
    assert first is not None
    assert scan(tmp_path).models["iris"].config_fingerprint == first
    put(tmp_path, "iris/model.toml", b"max_rows = 50\n")
    assert scan(tmp_path).models["iris"].config_fingerprint != first


@pytest.mark.parametrize(
    ("toml", "selected"),
    [
        ("", [5]),
        ("version_policy = { latest = 2 }", [3, 5]),
        ("version_policy = { latest = 10 }", [1, 2, 3, 5]),
        ('version_policy = "all"', [1, 2, 3, 5]),
        ("version_policy = [1, 3]", [1, 3]),
        ("version_policy = [3, 4]", [3]),  # a specific version that is absent is simply not selected
    ],
)
def test_selected_applies_the_version_policy(tmp_path: Path, toml: str, selected: list[int]) -> None:
    for v in (1, 2, 3, 5):
        put(tmp_path, f"iris/{v}/model.skops")
    put(tmp_path, "iris/4/notes.md", b"")  # unusable versions are never selected
    put(tmp_path, "iris/model.toml", toml.encode())
    assert scan(tmp_path).models["iris"].selected() == selected


def test_selected_on_a_hand_built_source() -> None:
    source = ModelSource(
        "m",
        None,
        ModelConfig(version_policy=VersionPolicy("latest", latest=2)),
        None,
        {v: VersionSource(v, Path(f"/r/m/{v}/a.onnx"), f"m/{v}/a.onnx", ()) for v in (3, 1, 2)},
    )
    assert list(source.versions) == [1, 2, 3]
    assert source.selected() == [2, 3]


def test_scan_model(tmp_path: Path) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/model.toml", b"max_rows = 5\n")
    put(tmp_path, "churn.skops")
    put(tmp_path, "wine/MLmodel", b"")
    put(tmp_path, "stray/notes.md", b"")
    full = scan(tmp_path)
    for name in ("iris", "churn", "wine"):
        assert scan_model(tmp_path, name) == full.models[name]
    assert scan_model(tmp_path, "nosuch") is None
    assert scan_model(tmp_path, "stray") is None
    assert scan_model(tmp_path, "bad name") is None

    put(tmp_path, "iris/2/model.skops")
    iris = scan_model(tmp_path, "iris")
    assert iris is not None
    assert list(iris.versions) == [1, 2]
    assert iris != full.models["iris"]

    (tmp_path / "churn.skops").unlink()
    assert scan_model(tmp_path, "churn") is None


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        scan(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="does not exist"):
        scan_model(tmp_path / "nowhere", "iris")
    put(tmp_path, "file.skops")
    with pytest.raises(ModelLoadError, match="is not a directory"):
        scan(tmp_path / "file.skops")


def test_empty_repository(tmp_path: Path) -> None:
    result = scan(tmp_path)
    assert result.models == {}
    assert result.errors == ()


def test_is_repository(tmp_path: Path) -> None:
    assert is_repository(tmp_path)
    put(tmp_path, "loose/churn.skops")
    assert is_repository(tmp_path / "loose")
    put(tmp_path, "mlflow/MLmodel", b"")
    assert not is_repository(tmp_path / "mlflow")
    assert not is_repository(tmp_path / "loose/churn.skops")
    assert not is_repository(tmp_path / "nowhere")


@pytest.fixture
def lock(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Directories that behave as if unreadable (EACCES on listing and on stat inside), even for root."""
    locked: set[Path] = set()
    iterdir, is_file = Path.iterdir, Path.is_file

    def denied(path: Path) -> None:
        if path in locked or path.parent in locked:
            raise PermissionError(13, "Permission denied", str(path))

    def guarded_iterdir(self: Path) -> Iterator[Path]:
        denied(self)
        return iterdir(self)

    def guarded_is_file(self: Path) -> bool:
        if self.parent in locked:
            denied(self)
        return is_file(self)

    monkeypatch.setattr(Path, "iterdir", guarded_iterdir)
    monkeypatch.setattr(Path, "is_file", guarded_is_file)
    return locked


def test_unreadable_directories_are_recorded(tmp_path: Path, lock: set[Path]) -> None:
    put(tmp_path, "iris/1/model.skops")
    put(tmp_path, "iris/2/model.skops")
    put(tmp_path, "wine/1/model.skops")
    lock.update({tmp_path / "iris/2", tmp_path / "wine"})
    result = scan(tmp_path)
    iris = result.models["iris"]
    assert list(iris.versions) == [1]
    assert iris.errors[2] == "iris/2/: cannot be read: Permission denied"
    wine = result.models["wine"]
    assert wine.error == "wine/: cannot be read: Permission denied"
    assert wine.versions == {}
    lock.add(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot be read: Permission denied"):
        scan(tmp_path)

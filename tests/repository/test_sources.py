"""Sources: what the model arguments name (repository directories, loose artefacts, fixed files, module:Class
specs), and pickle trust pinned per version in model.toml."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from helpers.repo import (
    ModelRepo,
    index_of,
    label_of,
    repository,
    rows,
    skops_bytes,
    slow_joblib_bytes,
)
from modelapi.batching import BatchPolicy
from modelapi.repository.registry import Repository
from modelapi.repository.sources import Sources, VersionSpec, _public, read_models
from modelapi.settings import Settings


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepo:
    return ModelRepo(tmp_path / "models")


def started(settings: Settings, check: Any) -> None:
    """Start a repository for ``settings``, run ``check(repository)``, close it."""

    async def scenario() -> None:
        r = repository(settings)
        await r.start()
        try:
            check(r)
        finally:
            await r.close()

    asyncio.run(scenario())


def answer(r: Repository, name: str, version: str | None = None) -> str:
    return label_of(dict(r.resolve(name, version).model.predict(rows(1.0))))


def test_a_name_for_a_repository_directory_is_refused(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    with pytest.raises(ValueError, match=r"--name 'x' given for the repository .*named by their directories"):
        Sources.from_settings(Settings(models=[str(repo.root)], names=["x"]))


def test_more_names_than_models_is_refused(repo: ModelRepo, tmp_path: Path) -> None:
    path = tmp_path / "one.skops"
    path.write_bytes(skops_bytes("one"))
    with pytest.raises(ValueError, match="2 names given for 1 models"):
        Sources.from_settings(Settings(models=[str(path)], names=["a", "b"]))


def test_a_loose_artefact_in_the_repository_is_a_model_with_version_1(repo: ModelRepo) -> None:
    repo.loose("churn", skops_bytes("churn"))
    repo.version("m", 2, skops_bytes("v2"))

    def check(r: Repository) -> None:
        assert index_of(r, "churn") == {"1": ("READY", "")}
        assert r.resolve("churn").version == "1" and answer(r, "churn") == "churn-hi"
        assert r.resolve("churn").describe()["info"]["source"] == "churn.skops"  # named inside the repository
        assert index_of(r, "m") == {"2": ("READY", "")}

    started(Settings(models=[str(repo.root)]), check)


def test_a_loose_artefact_being_written_is_not_served(repo: ModelRepo) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    (repo.root / "churn.skops.part").write_bytes(skops_bytes("churn")[:50])

    def check(r: Repository) -> None:
        assert r.names() == ["m"]

    started(Settings(models=[str(repo.root)]), check)


def test_a_fixed_file_is_version_1_named_by_its_stem_or_by_name(tmp_path: Path) -> None:
    path = tmp_path / "fraud.skops"
    path.write_bytes(skops_bytes("fraud"))

    def check(r: Repository) -> None:
        assert index_of(r, "fraud") == {"1": ("READY", "")}
        assert answer(r, "fraud") == "fraud-hi"
        assert r.resolve("fraud").describe()["info"]["source"] == "fraud.skops"
        assert str(tmp_path) not in str(r.resolve("fraud").describe())

    started(Settings(models=[str(path)]), check)

    def named(r: Repository) -> None:
        assert r.names() == ["scorer"] and answer(r, "scorer") == "fraud-hi"

    started(Settings(models=[str(path)], names=["scorer"]), named)


def test_a_class_spec_is_version_1(tmp_path: Path) -> None:
    def check(r: Repository) -> None:
        assert index_of(r, "regressor") == {"1": ("READY", "")}

    started(Settings(models=["toymodels:Regressor"]), check)


def test_a_repository_and_a_file_together(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("m", 1, skops_bytes("v1"))
    repo.version("m", 2, skops_bytes("v2"))
    path = tmp_path / "extra.skops"
    path.write_bytes(skops_bytes("extra"))

    def check(r: Repository) -> None:
        assert sorted(r.names()) == ["extra", "m"]
        assert answer(r, "extra") == "extra-hi" and answer(r, "m") == "v2-hi"

    started(Settings(models=[str(repo.root), str(path)], names=[]), check)


def test_a_file_and_a_repository_model_of_the_same_name(
    repo: ModelRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo.version("m", 1, skops_bytes("repo"))
    path = tmp_path / "m.skops"
    path.write_bytes(skops_bytes("file"))

    def check(r: Repository) -> None:
        assert r.names() == ["m"] and answer(r, "m") == "file-hi"  # the fixed file is served, once

    with caplog.at_level(logging.ERROR, logger="modelapi"):
        started(Settings(models=[str(repo.root), str(path)]), check)
    assert "a model named 'm' is already served" in caplog.text


def test_a_fixed_file_is_read_once_at_start(tmp_path: Path) -> None:
    path = tmp_path / "fixed.skops"
    path.write_bytes(skops_bytes("before"))

    async def scenario() -> None:
        r = repository(Settings(models=[str(path)]))
        await r.start()
        path.write_bytes(skops_bytes("after"))
        await r.reconcile()
        assert answer(r, "fixed") == "before-hi"  # a repository directory is followed; a fixed file is not
        await r.close()

    asyncio.run(scenario())


# pickle trust ------------------------------------------------------------------------------------------------
def test_a_pickle_without_trust_is_refused(repo: ModelRepo, tmp_path: Path) -> None:
    repo.version("p", 1, slow_joblib_bytes(), "model.joblib")
    repo.version("m", 1, skops_bytes("v1"))

    def check(r: Repository) -> None:
        state, reason = index_of(r, "p")["1"]
        assert state == "UNAVAILABLE" and "refusing to load p/1/model.joblib" in reason and "pickle" in reason
        assert str(tmp_path) not in reason

    started(Settings(models=[str(repo.root)]), check)


def test_a_sha256_pin_in_model_toml_trusts_that_version_only(repo: ModelRepo, tmp_path: Path) -> None:
    one, two = slow_joblib_bytes(tag="one"), slow_joblib_bytes(tag="two")
    repo.version("p", 1, one, "model.joblib")
    repo.version("p", 2, two, "model.joblib")
    digest = hashlib.sha256(one).hexdigest()
    repo.toml("p", f'version_policy = "all"\n[sha256]\n"1/model.joblib" = "{digest.upper()}"\n')

    def check(r: Repository) -> None:
        rows_now = index_of(r, "p")
        assert rows_now["1"] == ("READY", "")
        assert answer(r, "p", "1") == "one-hi"
        state, reason = rows_now["2"]
        assert state == "UNAVAILABLE" and "refusing to load p/2/model.joblib" in reason
        assert str(tmp_path) not in reason
        assert r.resolve("p").version == "1"

    started(Settings(models=[str(repo.root)]), check)


def test_a_pin_follows_the_content_not_the_path(repo: ModelRepo) -> None:
    one, two = slow_joblib_bytes(tag="one"), slow_joblib_bytes(tag="two")
    path = repo.version("p", 1, one, "model.joblib")
    repo.toml("p", f'[sha256]\n"1/model.joblib" = "{hashlib.sha256(one).hexdigest()}"\n')

    async def scenario() -> None:
        r = repository(Settings(models=[str(repo.root)]))
        await r.start()
        repo.replace(path, two)  # other bytes under the pinned path: not trusted, and the old copy keeps serving
        await r.reconcile()
        assert answer(r, "p") == "one-hi"
        assert index_of(r, "p")["1"][0] == "READY"
        await r.close()

    asyncio.run(scenario())


def test_trust_pickle_trusts_every_pickle(repo: ModelRepo) -> None:
    repo.version("p", 1, slow_joblib_bytes(tag="one"), "model.joblib")

    def check(r: Repository) -> None:
        assert answer(r, "p") == "one-hi"

    started(Settings(models=[str(repo.root)], trust_pickle=True), check)


def test_read_models_reads_every_version_for_inspect(repo: ModelRepo) -> None:
    for v in (1, 2):
        repo.version("m", v, skops_bytes(f"v{v}"))
    repo.version("m", 3, b"corrupt")
    repo.toml("m", 'version_policy = "all"\n')
    models, problems = read_models(Settings(models=[str(repo.root)]))
    assert [(m.name, m.version) for m in models] == [("m", "1"), ("m", "2")]
    assert len(problems) == 1 and problems[0].startswith("m version 3: ") and "m/3/model.skops" in problems[0]
    assert str(repo.root) not in problems[0]


def test_a_pin_holds_for_every_format(repo: ModelRepo, tmp_path: Path) -> None:
    """A pinned .skops file whose content is not the pinned one is not served (and the reason says why)."""
    good, other = skops_bytes("good"), skops_bytes("other")
    repo.version("m", 1, good)
    repo.version("m", 2, other)
    pins = f'"1/model.skops" = "{hashlib.sha256(good).hexdigest()}"\n"2/model.skops" = "{"0" * 64}"\n'
    repo.toml("m", f'version_policy = "all"\n[sha256]\n{pins}')

    def check(r: Repository) -> None:
        rows_now = index_of(r, "m")
        assert rows_now["1"] == ("READY", "")
        state, reason = rows_now["2"]
        assert state == "UNAVAILABLE" and "m/2/model.skops: its SHA-256 is" in reason and "model.toml pins" in reason
        assert str(tmp_path) not in reason

    started(Settings(models=[str(repo.root)]), check)


# a directory holding one model: what KServe's storage initializer leaves in /mnt/models ---------------------
def names_are(*expected: str) -> Any:
    def check(r: Repository) -> None:
        assert r.names() == list(expected)

    return check


def test_a_name_for_a_directory_holding_one_model_file_names_it(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "model.skops").write_bytes(skops_bytes("one"))
    (mnt / "README.md").write_text("from the bucket")  # not a model: the directory still holds one

    def check(r: Repository) -> None:
        assert r.names() == ["iris"] and answer(r, "iris") == "one-hi"
        assert r.resolve("iris").describe()["info"]["source"] == "model.skops"
        assert not r.sources.knows("model")  # served under its name only

    started(Settings(models=[str(mnt)], names=["iris"]), check)
    started(Settings(models=[str(mnt)], model_name="iris"), check)

    started(Settings(models=[str(mnt)]), names_are("model"))  # no name: the file stem, as before


def test_model_name_leaves_a_repository_s_names_alone(repo: ModelRepo) -> None:
    repo.version("a", 1, skops_bytes("a"))
    repo.version("b", 1, skops_bytes("b"))

    started(Settings(models=[str(repo.root)], model_name="iris"), names_are("a", "b"))
    # a repository of one model directory is a repository still: the directory names it
    single = ModelRepo(repo.root.parent / "single")
    single.version("churn", 1, skops_bytes("c"))
    started(Settings(models=[str(single.root)], model_name="iris"), names_are("churn"))
    with pytest.raises(ValueError, match=r"--name names a directory's model only when it holds one model file"):
        Sources.from_settings(Settings(models=[str(single.root)], names=["iris"]))


def test_model_name_names_a_file_and_needs_one_model(tmp_path: Path) -> None:
    path = tmp_path / "fraud.skops"
    path.write_bytes(skops_bytes("fraud"))
    started(Settings(models=[str(path)], model_name="scorer"), names_are("scorer"))
    # --name wins over --model-name
    started(Settings(models=[str(path)], names=["x"], model_name="scorer"), names_are("x"))
    with pytest.raises(ValueError, match="--model-name names the only model served; 2 models are given"):
        Sources.from_settings(Settings(models=[str(path), str(path)], model_name="scorer"))


def test_a_renamed_model_follows_its_file_with_watch(tmp_path: Path) -> None:
    from modelapi.repository.watch import changed_models

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "model.skops").write_bytes(skops_bytes("one"))

    async def scenario() -> None:
        r = repository(Settings(models=[str(mnt)], names=["iris"]))
        await r.start()
        try:
            assert answer(r, "iris") == "one-hi"
            staged = mnt / "model.skops.part"
            staged.write_bytes(skops_bytes("two"))
            staged.rename(mnt / "model.skops")
            await r.reconcile(changed_models(mnt, [mnt / "model.skops"]))  # what --watch would report: "model"
            assert r.names() == ["iris"] and answer(r, "iris") == "two-hi"
        finally:
            await r.close()

    asyncio.run(scenario())


def test_a_load_error_names_the_file_inside_a_repository_given_as_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every spelling of the repository is taken off, the longest first: a relative ``repo`` replaced before the
    absolute ``/.../repo`` left ``/.../iris/5/model.onnx``, a server path to a file that is not there."""
    monkeypatch.chdir(tmp_path)
    spec = VersionSpec("5", lambda: None, None, None, None, BatchPolicy(), root=Path("repo"))  # type: ignore[arg-type,return-value]
    for given in (f"{tmp_path}/repo/iris/5/model.onnx", "repo/iris/5/model.onnx"):
        assert spec.public(f"cannot read {given} as an ONNX model") == "cannot read iris/5/model.onnx as an ONNX model"
    assert spec.public("cannot read /srv/repo/iris/5/model.onnx") == "cannot read /srv/repo/iris/5/model.onnx"
    problem = _public(Path("repo"), OSError(f"[Errno 5] Input/output error: '{tmp_path}/repo' (a repository)"))
    assert problem == "[Errno 5] Input/output error: 'repo' (a repository)"

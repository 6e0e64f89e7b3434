"""The validators CI runs on what `modelapi deploy` writes and on the Dockerfile: kubernetes-validate against
the Kubernetes schemas, our KServe schema (kserve_schema.py), checkov's Kubernetes and Dockerfile checks, and
hadolint. A validator that is missing skips the test here and fails it in CI (CI=true)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import kserve_schema
from .conftest import DIGEST_IMAGE, IMAGE, generate
from .tools import KUBERNETES_VERSIONS, ROOT, checkov, hadolint, missing

#: checkov checks the generated manifests fail on purpose, each with its reason (docs/deployment.md repeats them)
CHECKOV_SKIPS = {
    "CKV_K8S_35": "modelapi reads its settings from the environment only (settings.py); the database and Redis "
    "URLs come from a Secret through secretKeyRef, never written in a manifest",
}


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate", "pip install -e '.[deploy-check]'")
    return kubernetes_validate


def _validate_kubernetes(document: dict[str, Any], version: str) -> None:
    _kubernetes_validate().validate(document, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_validate_against_the_kubernetes_schemas(tmp_path: Path, version: str) -> None:
    for args in (
        ["/models/iris.skops", "--image", IMAGE],
        ["/models", "--image", DIGEST_IMAGE, "--name", "repo", "--replicas", "1", "--serve-arg=--watch"],
        ["/models/iris.skops", "--image", IMAGE, "--grpc-port", "8001"],
    ):
        found = generate(tmp_path, "kubernetes", *args)
        assert len(found) == 6
        for document in found.values():
            _validate_kubernetes(document, version)


def test_a_misspelt_field_fails_kubernetes_validation(kubernetes: dict[str, dict[str, Any]]) -> None:
    kubernetes_validate = _kubernetes_validate()
    deployment = kubernetes["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_kubernetes(deployment, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kserve_manifests_validate(kserve: dict[str, dict[str, Any]], tmp_path: Path, version: str) -> None:
    _kubernetes_validate()  # the Kubernetes types inside come from its schemas
    for document in kserve.values():
        kserve_schema.validate(document, version)
    for mode in ("raw", "serverless"):
        found = generate(
            tmp_path / mode, "kserve", "--name", "iris", "--storage-uri", "gs://b/iris", "--image", IMAGE,
            "--deployment-mode", mode, "--graceful-timeout", "45",
        )  # fmt: skip
        for document in found.values():
            kserve_schema.validate(document, version)


def test_a_misspelt_kserve_field_fails(kserve: dict[str, dict[str, Any]]) -> None:
    import jsonschema

    _kubernetes_validate()
    isvc = kserve["InferenceService"]
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        kserve_schema.validate(isvc, KUBERNETES_VERSIONS[-1])
    runtime = kserve["ClusterServingRuntime"]
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(jsonschema.ValidationError, match="paht"):
        kserve_schema.validate(runtime, KUBERNETES_VERSIONS[-1])


def _checkov(*args: str) -> dict[str, Any]:
    command = [checkov(), *args, "--output", "json", "--compact", "--quiet", "--skip-download"]
    if CHECKOV_SKIPS:
        command += ["--skip-check", ",".join(CHECKOV_SKIPS)]
    # --skip-download: no policy download from the vendor's API (CI has no internet); the checks are built in
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    assert not failed, "\n".join(f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in failed)
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    passed = sum(r["summary"]["passed"] for r in reports)
    for r in reports:
        print(f"checkov {r['check_type']}: {r['summary']['passed']} passed, 0 failed, skipped {sorted(CHECKOV_SKIPS)}")
    return {"passed": passed, "reports": reports}


def test_checkov_passes_the_manifests_and_the_dockerfile(tmp_path: Path) -> None:
    # a digest: checkov's CKV_K8S_43 wants every image pinned by digest, as production should
    generate(tmp_path, "kubernetes", "/models/iris.skops", "--image", DIGEST_IMAGE)
    shutil.copy(ROOT / "Dockerfile", tmp_path / "manifests" / "Dockerfile")  # one run: checkov starts slowly
    result = _checkov("--directory", str(tmp_path / "manifests"), "--framework", "kubernetes", "dockerfile")
    checked = {r["check_type"]: r["summary"]["passed"] for r in result["reports"]}
    assert checked["kubernetes"] >= 80 and checked["dockerfile"] >= 50, checked


def test_hadolint_passes_the_dockerfile() -> None:
    run = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_dockerfile_keeps_its_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2  # multi-stage: the build stage's tools stay behind
    assert all(f.startswith("python:3.11.") and "-slim" in f for f in froms)  # a pinned, slim base
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text and "/v2/health/live" in text
    patterns = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert patterns[0] == "*"  # nothing enters the build context unless listed: no .env, .git or keys
    assert all(p.startswith(("!", "**/")) for p in patterns[1:])

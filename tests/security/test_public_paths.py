"""Which paths load without a key: the templates the protocols declare, matched exactly."""

from __future__ import annotations

from modelapi.protocols import registered
from modelapi.security.auth import OPEN_PATHS, PublicPaths


def test_templates_match_one_segment_or_one_file_and_nothing_else() -> None:
    public = PublicPaths(["/docs", "/models/{}/playground", "/playground/assets/*"])
    assert "/docs" in public
    assert "/models/iris/playground" in public
    assert "/playground/assets/playground.js" in public
    for path in (
        "/docs/",
        "/docsx",
        "/models/iris/predict",
        "/models/a/b/playground",  # one segment only
        "/models//playground",
        "/models/iris/playground/x",
        "/playground/assets/",
        "/playground/assets/a/b.js",
        "/playground/assets",
        "/xdocs",
    ):
        assert path not in public, path
    assert "/anything" not in PublicPaths()


def test_the_registered_public_paths_are_pages_and_their_files_only() -> None:
    declared = {path for protocol in registered() for path in protocol.public_paths}
    assert declared == {
        "/docs",
        "/docs/assets/*",
        "/docs/openapi-3.0.json",
        "/openapi.json",
        "/models/{}/playground",
        "/playground/assets/*",
    }
    public = PublicPaths(declared)
    for path in OPEN_PATHS:  # the health probes are open by another rule, untouched by this one
        assert path not in public
    for path in ("/models/iris", "/models/iris/predict", "/models/iris/jobs", "/jobs/1", "/", "/models", "/metrics"):
        assert path not in public, path

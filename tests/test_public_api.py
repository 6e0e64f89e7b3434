from __future__ import annotations

import subprocess
import sys

import modelapi


def test_public_surface_is_small_and_stable() -> None:
    assert sorted(modelapi.__all__) == sorted(
        [
            "Model",
            "ModelAPIError",
            "Settings",
            "Signature",
            "TensorSpec",
            "Trust",
            "__version__",
            "create_app",
            "load_model",
            # the Python client (docs/client.md)
            "AsyncClient",
            "AuthenticationError",
            "BadRequestError",
            "Client",
            "ClientError",
            "ClientTimeoutError",
            "ConflictError",
            "ConnectionFailedError",
            "HTTPStatusError",
            "JobFailedError",
            "NotFoundError",
            "PermissionDeniedError",
            "RateLimitError",
            "ServerError",
            "ServiceUnavailableError",
        ]
    )
    for name in modelapi.__all__:
        assert hasattr(modelapi, name)


def test_import_has_no_side_effects() -> None:
    """Importing must not load heavy model libraries, read models, bind sockets or configure logging."""
    code = (
        "import logging, sys; import modelapi; "
        "heavy = [m for m in ('sklearn', 'onnxruntime', 'skops', 'uvicorn', 'httpx', 'pandas') if m in sys.modules]; "
        "assert not heavy, heavy; assert not logging.getLogger().handlers; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_client_errors_form_one_hierarchy() -> None:
    """Every client error is a ``ClientError``; status errors are ``HTTPStatusError``s (docs/client.md)."""
    for name in modelapi.__all__:
        if name.endswith("Error") and name not in ("ModelAPIError", "ClientError"):
            assert issubclass(getattr(modelapi, name), modelapi.ClientError), name
    assert issubclass(modelapi.ServiceUnavailableError, modelapi.ServerError)
    assert issubclass(modelapi.ClientTimeoutError, TimeoutError)
    assert modelapi.Client.__module__ == "modelapi.client.sync"

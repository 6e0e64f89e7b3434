"""MLflow scoring server: ``/invocations``, ``/models/{name}/invocations``, ``/ping``, ``/health``."""

"""``GET /metrics``: Prometheus' text format (``modelapi.metrics``; docs/observability.md)."""

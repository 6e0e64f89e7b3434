"""Friendly JSON records: ``/models/{name}/predict`` (records, query strings), ``/models``, ``/``."""

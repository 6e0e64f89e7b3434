"""The modelapi benchmark: ``make bench`` (or ``python -m bench.run``). Not a test; not run in CI."""

"""The prediction log, reference distributions and drift (docs/monitoring.md).

``service.Monitor`` is one worker's view of it; ``command`` is ``modelapi monitor``. This file imports nothing, so
that the command line can offer ``modelapi monitor`` without loading pyarrow for every other command.
"""

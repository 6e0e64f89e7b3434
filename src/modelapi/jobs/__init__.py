"""Long-running prediction jobs: submit a batch, track it, fetch the result; nothing lost on a crash.

``formats_in`` splits an upload into row chunks, ``formats_out`` writes results, ``store`` keeps jobs and chunks
(SQLite or PostgreSQL via SQLAlchemy), ``service`` runs one job chunk by chunk through the data plane,
``runner`` drives it in process and ``rq_runner`` through Redis/RQ, ``host`` wires them into the server,
``client`` is ``modelapi predict`` and ``commands`` its argument parsing. See docs/jobs.md.
"""

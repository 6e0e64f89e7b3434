"""Drift as Prometheus gauges: every ``monitor_interval_s`` each worker reads the log of every model it logs
and sets the gauges of the last ``drift_window_rows`` rows of each version (``livemostrecent``: every worker
reads the same log, so the latest write is as good as any). Off the event loop, on a thread of its own."""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Monitor

log = logging.getLogger("modelapi.monitor")


class DriftGauges:
    def __init__(self, monitor: Monitor, families: Any, interval_s: float) -> None:
        self.monitor = monitor
        self.families = families
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelapi-drift-gauges", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for model in self.monitor.logging_models():
                try:
                    self.update(model)
                except Exception:
                    log.exception("monitor: the drift gauges of model %r could not be computed", model)

    def update(self, model: str) -> None:
        f = self.families
        for version, windows in self.monitor.status(model)["versions"].items():
            recent = windows["last_rows"]
            for feature in recent.get("features", []):
                labels = (model, version, feature["feature"])
                if feature.get("psi") is not None:
                    f.drift_psi.labels(*labels).set(feature["psi"])
                    f.drift_p.labels(*labels).set(feature["p_value"])
                if feature.get("missing") is not None:
                    f.missing.labels(*labels).set(feature["missing"])
            prediction = recent.get("prediction") or {}
            if prediction.get("psi") is not None:
                f.prediction_psi.labels(model, version).set(prediction["psi"])
            rate = (windows["last_hour"].get("requests") or {}).get("rejected_rate")
            f.rejected_ratio.labels(model, version).set(math.nan if rate is None else rate)

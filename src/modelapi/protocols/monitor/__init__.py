"""``GET /models/{name}/monitor``: the prediction log's drift report as JSON (the monitor is ``modelapi.monitor``)."""

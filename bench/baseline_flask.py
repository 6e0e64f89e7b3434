"""The plain baseline, written the way the classic tutorials do it: Flask, served by gunicorn with 2 workers.

    BENCH_MODEL=model.skops gunicorn -w 2 -b 127.0.0.1:8000 bench.baseline_flask:app

It loads the same skops file as modelapi and answers the friendly route's shape: one record gets
``{"prediction": ..., "probabilities": {class: p}}``, a list of records gets ``{"predictions": [...]}``.
"""

from __future__ import annotations

import os

import numpy as np
import skops.io as sio
from flask import Flask, Response, jsonify, request

MODEL_PATH = os.environ["BENCH_MODEL"]
model = sio.load(MODEL_PATH, trusted=sio.get_untrusted_types(file=MODEL_PATH))
classes = [str(c) for c in model.classes_]

app = Flask(__name__)


@app.route("/health")
def health() -> str:
    return "ok"


@app.route("/predict", methods=["POST"])
def predict() -> Response:
    data = request.get_json()
    records = data if isinstance(data, list) else [data]
    X = np.array([r["input"] for r in records])
    labels = model.predict(X)
    probabilities = model.predict_proba(X)
    predictions = [
        {"prediction": int(label), "probabilities": dict(zip(classes, p.tolist(), strict=True))}
        for label, p in zip(labels, probabilities, strict=True)
    ]
    if isinstance(data, list):
        return jsonify({"predictions": predictions})
    return jsonify(predictions[0])

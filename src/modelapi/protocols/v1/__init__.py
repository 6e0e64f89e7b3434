"""KServe V1 / TensorFlow Serving: ``/v1/models/{name}:predict`` and model status."""

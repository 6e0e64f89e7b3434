# modelapi server image (docs/deployment.md). Build:   docker build -t registry.example.com/modelapi:0.1.0 .
# Serve a model baked into an image FROM this one, or mounted at run time:
#   docker run -p 8080:8080 -v "$PWD/models:/models:ro" registry.example.com/modelapi:0.1.0 serve /models \
#       --host 0.0.0.0 --port 8080
# EXTRAS picks the model formats installed (torch is left out by default: it adds gigabytes), and grpc the
# --grpc-port front end.

# The base is pinned by tag; pin it by digest (python:3.11.13-slim-bookworm@sha256:...) in your own registry.
FROM python:3.11.13-slim-bookworm AS build
ARG EXTRAS=onnx,xgboost,lightgbm,mlflow,postgres,queue,grpc
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# a virtual environment is copied whole into the runtime stage: no compiler or build files go with it
RUN python -m venv /opt/modelapi
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/modelapi/bin/pip install --no-cache-dir ".[${EXTRAS}]"

FROM python:3.11.13-slim-bookworm
# LightGBM's wheel links the system's OpenMP runtime (the other formats' wheels bundle their own). Its version
# follows the base image's Debian release: a pinned version would break the build at Debian's next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# a fixed, high, non-root UID: Kubernetes' runAsNonRoot needs a numeric user to verify
RUN useradd --system --no-log-init --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin modelapi \
    && mkdir -p /var/lib/modelapi /models \
    && chown 10001:0 /var/lib/modelapi
COPY --from=build /opt/modelapi /opt/modelapi
ENV PATH=/opt/modelapi/bin:$PATH \
    MODELAPI_STATE_DIR=/var/lib/modelapi \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /var/lib/modelapi
EXPOSE 8080
# the process answers: /v2/health/live needs no key and touches no model. On the operations port where
# MODELAPI_METRICS_PORT turns it on (a listener no flood on 8080 fills: docs/overload.md), else on 8080; the
# port stays off by default, since it serves /metrics (model names) without a key
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MODELAPI_METRICS_PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/v2/health/live', timeout=2)"]
ENTRYPOINT ["modelapi"]
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]

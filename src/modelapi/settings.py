"""Settings: the only place that reads the environment.

Precedence, highest first: keyword arguments (which is how CLI flags arrive), ``MODELAPI_*`` environment
variables, defaults. List settings take JSON in the environment, e.g. ``MODELAPI_MODELS='["a.onnx", "b.skops"]'``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .batching import BatchPolicy, parse_policy

#: ``access_log_refusals_per_s``'s value for no bound (``None`` in Python)
UNBOUNDED = "unbounded"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELAPI_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to bind; the default serves this machine only")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    models: list[str] = Field(
        default_factory=list,
        description="model repositories, model files, MLflow directories or `module:Class` specs; empty serves "
        "the bundled demo model",
    )
    names: list[str] = Field(default_factory=list, description="names for the models, in order (default: file stem)")
    model_name: str | None = Field(
        None,
        description="the name of the only model when it is a single model (a file, an MLflow directory, or a "
        "directory holding one); a repository's models keep their directories' names (KServe passes {{.Name}})",
    )
    trust_pickle: bool = Field(False, description="allow pickle/joblib files (loading a pickle runs its code)")
    sha256: list[str] = Field(
        default_factory=list, description="SHA-256 digests of pickle files to trust; others are refused"
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="largest request body accepted (413 above)")
    max_rows: int = Field(100_000, gt=0, description="most rows in one prediction request (413 above)")
    # limits (docs/security.md#limits) ------------------------------------------------------------------------
    max_json_depth: int = Field(32, ge=2, le=1024, description="deepest nesting of a JSON body (400 above)")
    max_json_elements: int = Field(
        2_000_000, gt=0, description="most array elements and object members in a JSON body, in total (413 above)"
    )
    rate_limit: float = Field(
        100.0, ge=0, description="requests per second per API key, per worker (429 above; 0: no limit)"
    )
    rate_burst: int = Field(200, ge=1, description="requests an API key may send at once before rate_limit applies")
    key_cache_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="seconds a worker trusts an API key it looked up before it looks it up again: a revocation or "
        "a change of limits made elsewhere takes effect within this (0: every request looks its key up)",
    )
    max_inflight: int = Field(
        512, ge=1, description="requests per model admitted at once, running or queued, per worker (503 above)"
    )
    inference_timeout_s: float = Field(60.0, gt=0, description="seconds one request's inference may take (504 above)")
    max_queue_ms: float | None = Field(
        2000.0,
        gt=0,
        allow_inf_nan=False,  # unset is "no bound"; inf would stop pacing's order from being set (http/pacing.py)
        description="longest a request may wait for its model and its batch, per worker: refused at once when the "
        "expected wait and run of its batch is longer, dropped unrun when it runs out (503 "
        "with Retry-After; unset: no time bound)",
    )
    pacing_slice_ms: float = Field(
        2.0,
        ge=0,
        description="under a flood, the longest run of request heads one turn of the event loop takes; the rest "
        "wait their turn (oldest first, newest first once the oldest has waited half of the tightest queue "
        "budget, max_queue_ms or that of a model with calls in flight, oldest first again past twice it), so "
        "admitted requests and health probes keep moving (docs/overload.md; 0: off)",
    )
    hold_early_retries: bool = Field(
        True,
        description="hold a request that retries a 503 on the same connection and path before its Retry-After "
        "until then, and refuse it with Retry-After: 0 (docs/overload.md)",
    )
    max_upload_bytes: int = Field(
        2 * 1024**3, gt=0, description="largest job upload (POST /models/{name}/jobs) accepted (413 above)"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers")
    max_header_bytes: int = Field(65536, ge=1024, description="largest request head (431 above)")
    body_timeout_s: float = Field(60.0, gt=0, description="seconds a client has to send a request's body (408 above)")
    keep_alive_s: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")
    # TLS and browser access (docs/security.md#tls, #headers) ------------------------------------------------
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve HTTPS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_ca: Path | None = Field(None, description="PEM CA bundle: require client certificates signed by it")
    cors_origins: list[str] = Field(
        default_factory=list, description="origins browsers may call the API from (CORS); empty: none"
    )
    log_level: str = Field("info", description="critical, error, warning, info or debug")
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="log lines as text or JSON, one object per line; auto: text on a terminal, else JSON"
    )
    access_log_flush_ms: float = Field(
        50.0,
        ge=0,
        le=10_000,
        description="longest an access line waits to be written with the next ones, in one write (0: each at once; "
        "a kill -9 loses at most this long's lines; docs/observability.md#logs)",
    )
    access_log_refusals_per_s: int | None = Field(
        100,
        ge=0,
        description="access lines of 503s refused on the request's head a second, per worker; the rest write none "
        "and the rejections warning counts them (0: none; 'unbounded': every one; docs/observability.md#logs)",
    )
    # traces (docs/observability.md#traces): whether they are on; the OpenTelemetry SDK reads the rest of OTEL_*
    tracing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="OpenTelemetry traces: auto (on with the [otel] extra installed and OTEL_TRACES_EXPORTER or "
        "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT set), on, or off",
    )
    otel_traces_exporter: str | None = Field(
        None,
        validation_alias=AliasChoices("otel_traces_exporter", "OTEL_TRACES_EXPORTER"),
        description="OTEL_TRACES_EXPORTER: otlp (OTLP over HTTP/protobuf), console, none, or an installed exporter",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("otel_exporter_otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    )
    otel_sdk_disabled: bool = Field(False, validation_alias=AliasChoices("otel_sdk_disabled", "OTEL_SDK_DISABLED"))
    device: str = Field(
        "cpu", min_length=1, description="where PyTorch models run: cpu, cuda or cuda:N (an error if CUDA is absent)"
    )
    workers: int = Field(1, ge=1, le=256, description="worker processes serving one port (a supervisor restarts them)")
    grace_period_s: float = Field(
        30.0, ge=0, description="seconds in-flight requests get to finish after SIGTERM before they are cut off"
    )
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        le=600,
        description="seconds between SIGTERM and closing: readiness answers 503 meanwhile while the server goes on "
        "accepting and serving, so that a load balancer that checks readiness stops sending first and no request "
        "meets a connection being closed (0: close at once; SIGINT during the delay: stop at once)",
    )
    batching: bool = Field(True, description="adaptive batching of concurrent requests (docs/batching.md)")
    batch_max_size: int = Field(1024, ge=1, description="most rows in one batch (a larger request runs alone)")
    batch_max_delay_ms: float = Field(
        0.0, ge=0, le=10_000, description="how long a request that waits may wait for more rows (0: no extra wait)"
    )
    batch: list[str] = Field(
        default_factory=list, description="per-model batching, NAME=off|on|MAX_ROWS[,DELAY_MS]; wins over the rest"
    )
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(),
        description="where the server keeps its state (jobs database, key store); default: per-user data dir",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the jobs database and the key store (e.g. postgresql+psycopg://...); default: "
        "SQLite",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL: jobs go through RQ to `modelapi worker` processes, and API keys' rate limits and "
        "quotas are shared across workers and replicas",
    )
    job_chunk_rows: int = Field(10_000, gt=0, description="rows per committed chunk of a job")
    job_workers: int = Field(1, ge=0, description="in-process job workers (without redis_url); 0: none")
    job_retention_s: float = Field(7 * 24 * 3600, gt=0, description="seconds a finished job and its result are kept")
    job_lease_s: float = Field(30.0, gt=0, description="seconds a silent worker keeps a job before it is resumed")
    job_queue: str = Field("modelapi-jobs", min_length=1, description="RQ queue name (with redis_url)")
    api_key: str | None = Field(None, description="API key that `modelapi predict --url` sends to the server")
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="API key authentication: auto (on when binding a non-loopback address or when keys exist), "
        "on, or off (off on a non-loopback address also needs insecure_no_auth)",
    )
    insecure_no_auth: bool = Field(
        False, description="serve without authentication even on a non-loopback address (logs a warning)"
    )
    management_routes: bool = Field(
        False, description="enable the V2 repository routes (index, load, unload); they always need an admin key"
    )
    watch: bool = Field(
        False, description="follow model repositories: load new and changed versions, retire removed ones"
    )
    metrics: bool = Field(True, description="count requests, batches and loads for GET /metrics and Triton's stats")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="the operations port: GET /metrics (instead of on the main port) and the health routes on this "
        "port of the same host, without a key",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="modelapi worker: its own GET /metrics and health routes on this port of the host, without a "
        "key (a setting apart from metrics_port: a worker sharing a server's environment must not take its port)",
    )
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve the Open Inference Protocol over gRPC on this port of the same host ([grpc] extra)",
    )

    # the prediction log and drift (docs/monitoring.md) ------------------------------------------------------
    log_predictions: float = Field(
        0.0, ge=0, le=1, description="share of answered rows written to the prediction log (0: off; model.toml wins)"
    )
    reference: list[str] = Field(
        default_factory=list,
        description="training data to compare against, FILE (.parquet or .csv) or NAME=FILE per model; default: "
        "the first reference_rows logged rows",
    )
    reference_rows: int = Field(1000, ge=10, description="logged rows that make the reference without a file")
    drift_window_rows: int = Field(1000, ge=10, description="rows in the 'last N rows' drift window")
    log_queue_rows: int = Field(
        100_000, ge=1, description="rows waiting for the log writer at most; more are dropped and counted"
    )
    log_flush_s: float = Field(10.0, gt=0, le=3600, description="seconds between the log writer's batches")
    log_retention_days: float = Field(30.0, gt=0, description="days logged rows are kept")
    log_max_bytes: int = Field(1 << 30, gt=0, description="bytes of logged rows kept per model (oldest go first)")
    monitor_interval_s: float = Field(
        60.0, gt=0, description="seconds between recomputations of the drift gauges from the log"
    )

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, values: list[str]) -> list[str]:
        out = []
        for v in values:
            v = v.strip().lower()
            if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
                raise ValueError(f"{v!r} is not a SHA-256 digest (64 hex digits)")
            out.append(v)
        return out

    @field_validator("batch")
    @classmethod
    def _batch_specs(cls, values: list[str]) -> list[str]:
        for v in values:
            name, sep, spec = v.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{v!r}: expected NAME=off|on|MAX_ROWS[,DELAY_MS], e.g. iris=64,2")
            parse_policy(spec, BatchPolicy())
        return values

    def batch_policy(self) -> BatchPolicy:
        """The global batching policy."""
        return BatchPolicy(self.batching, self.batch_max_size, self.batch_max_delay_ms)

    def batch_overrides(self) -> dict[str, BatchPolicy]:
        """Per-model policies from ``batch``, each over the global sizes."""
        base = BatchPolicy(True, self.batch_max_size, self.batch_max_delay_ms)
        out = {}
        for v in self.batch:
            name, _, spec = v.partition("=")
            out[name.strip()] = parse_policy(spec, base)
        return out

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Settings:
        if self.auth == "off" and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(
                f"auth: turning authentication off on {self.host!r}, which other machines can reach, needs "
                "--insecure-no-auth (MODELAPI_INSECURE_NO_AUTH=true); or bind 127.0.0.1"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls: give both --tls-cert and --tls-key (PEM files), or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls: --tls-ca (client certificates) needs --tls-cert and --tls-key")
        return self

    @model_validator(mode="after")
    def _grpc_port_of_its_own(self) -> Settings:
        # with --workers N every port is bound with SO_REUSEPORT, so a shared one would not fail: refuse it here
        if self.grpc_port:
            for name, port in (("port", self.port), ("metrics_port", self.metrics_port)):
                if port == self.grpc_port:
                    raise ValueError(f"grpc_port: {self.grpc_port} is also the {name}; give gRPC a port of its own")
        return self

    @field_validator("metrics_port", "worker_metrics_port", "grpc_port", mode="before")
    @classmethod
    def _unset_port(cls, value: object) -> object:
        # an empty environment variable unsets an optional port: MODELAPI_METRICS_PORT= turns off the operations
        # port that the container image sets
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("access_log_refusals_per_s", mode="before")
    @classmethod
    def _unbounded(cls, value: object) -> object:
        # a word says "no bound": 0 already means no line, and any number is still a bound
        if isinstance(value, str):
            text = value.strip()
            if text.lower() == UNBOUNDED:
                return None
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"{value!r}: expected a whole number of lines a second (0: none), or '{UNBOUNDED}'")
        return value

    @field_validator("reference")
    @classmethod
    def _references(cls, values: list[str]) -> list[str]:
        for v in values:
            if not parse_reference(v)[1].lower().endswith((".parquet", ".csv")):
                raise ValueError(f"{v!r}: expected a .parquet or .csv file (FILE or NAME=FILE)")
        return values

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for v in values:
            if v != "*" and not re.fullmatch(r"https?://[^/\s?#]+", v):
                raise ValueError(f"{v!r} is not an origin: expected scheme://host[:port] (no path), or *")
        return values

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level must be one of critical, error, warning, info, debug")
        return value


def parse_reference(value: str) -> tuple[str | None, str]:
    """``NAME=FILE`` -> (NAME, FILE); ``FILE`` (which may hold ``=`` after a ``/``) -> (None, FILE)."""
    name, sep, path = value.partition("=")
    if sep and name.strip() and "/" not in name and "\\" not in name:
        return name.strip(), path
    return None, value


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/modelapi``, else ``~/.local/share/modelapi``: the per-user data directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelapi"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ::1 or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything

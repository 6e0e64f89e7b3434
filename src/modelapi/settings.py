"""Settings: the only place that reads the environment.

Precedence, highest first: keyword arguments (which is how CLI flags arrive), ``MODELAPI_*`` environment
variables, defaults. List settings take JSON in the environment, e.g. ``MODELAPI_MODELS='["a.onnx", "b.skops"]'``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .batching import BatchPolicy, parse_policy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELAPI_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to bind; the default serves this machine only")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    models: list[str] = Field(
        default_factory=list,
        description="model files, directories or `module:Class` specs; empty serves the bundled demo model",
    )
    names: list[str] = Field(default_factory=list, description="names for the models, in order (default: file stem)")
    trust_pickle: bool = Field(False, description="allow pickle/joblib files (loading a pickle runs its code)")
    sha256: list[str] = Field(
        default_factory=list, description="SHA-256 digests of pickle files to trust; others are refused"
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="largest request body accepted (413 above)")
    max_rows: int = Field(100_000, gt=0, description="most rows in one prediction request (413 above)")
    log_level: str = Field("info", description="critical, error, warning, info or debug")
    device: str = Field(
        "cpu", min_length=1, description="where PyTorch models run: cpu, cuda or cuda:N (an error if CUDA is absent)"
    )
    workers: int = Field(1, ge=1, le=256, description="worker processes serving one port (a supervisor restarts them)")
    grace_period_s: float = Field(
        30.0, ge=0, description="seconds in-flight requests get to finish after SIGTERM before they are cut off"
    )
    batching: bool = Field(True, description="adaptive batching of concurrent requests (docs/batching.md)")
    batch_max_size: int = Field(256, ge=1, description="most rows in one batch (a larger request runs alone)")
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
        None, description="SQLAlchemy URL of the jobs database (e.g. postgresql+psycopg://...); default: SQLite"
    )
    redis_url: str | None = Field(None, description="Redis URL: jobs go through RQ to `modelapi worker` processes")
    job_chunk_rows: int = Field(10_000, gt=0, description="rows per committed chunk of a job")
    job_workers: int = Field(1, ge=0, description="in-process job workers (without redis_url); 0: none")
    job_retention_s: float = Field(7 * 24 * 3600, gt=0, description="seconds a finished job and its result are kept")
    job_lease_s: float = Field(30.0, gt=0, description="seconds a silent worker keeps a job before it is resumed")
    job_queue: str = Field("modelapi-jobs", min_length=1, description="RQ queue name (with redis_url)")
    api_key: str | None = Field(None, description="API key that `modelapi predict --url` sends to the server")

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

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level must be one of critical, error, warning, info, debug")
        return value


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/modelapi``, else ``~/.local/share/modelapi``: the per-user data directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelapi"

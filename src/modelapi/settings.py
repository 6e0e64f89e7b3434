"""Settings: the only place that reads the environment.

Precedence, highest first: keyword arguments (which is how CLI flags arrive), ``MODELAPI_*`` environment
variables, defaults. List settings take JSON in the environment, e.g. ``MODELAPI_MODELS='["a.onnx", "b.skops"]'``.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level must be one of critical, error, warning, info, debug")
        return value

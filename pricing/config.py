"""The pricing service's settings (TOML via --config, or command-line flags), strictly validated: a value
of the wrong type is an error, not converted, and floats must be finite (device/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from device.settings import STRICT, PathValue, load_settings
from pricing.errors import ServiceConfigError


class ServiceConfig(BaseModel):
    model_config = STRICT

    # One catalog per embedder version the fleet runs (pricing/catalogs.py): a path, or a list of them.
    catalog: tuple[PathValue, ...] = (Path("catalog.sqlite"),)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="appliance", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    # Copies of the service with the same group split the devices' messages between them.
    share_group: str = Field(default="pricing", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    instance: str = Field(default="pricing-1", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    username: str | None = None
    password_file: PathValue | None = None
    ca_file: PathValue | None = None
    cert_file: PathValue | None = None
    key_file: PathValue | None = None
    # "hnsw": sign codes + exact re-rank (pricing/sign_index.py); "hnsw-int8": HNSW on the int8 vectors.
    index: Literal["exact", "hnsw", "hnsw-int8"] = "hnsw"
    k: int = Field(default=20, ge=1, le=1000)
    # Items less similar than this are not "similar items" at all; 0.5 keeps a cup's neighbours cups.
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    min_neighbours: int = Field(default=3, ge=1)
    stats_interval_s: float = Field(default=10.0, gt=0)
    # /metrics for Prometheus (pricing/metrics.py); 0 leaves it off. Each replica on a host needs its own.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("catalog", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        # A TOML array (and repeated --catalog flags) arrive as a list, which strict mode keeps from
        # becoming the tuple by itself.
        if isinstance(value, str | Path):
            return (value,)
        return tuple(value) if isinstance(value, list) else value


def load_service_config(path: Path | None, overrides: dict[str, object]) -> ServiceConfig:
    return load_settings(ServiceConfig, path, overrides, ServiceConfigError, "pricing-service")

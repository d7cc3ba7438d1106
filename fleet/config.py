"""The exporter's settings (TOML via --config, or flags), strictly validated like the other services': a
value of the wrong type is an error, not converted, and floats must be finite (device/settings.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from device.settings import STRICT, PathValue, load_settings
from fleet.errors import ExporterConfigError

# Prometheus's own registry of default ports lists 9100-9999; 9310 is free there and in this project.
DEFAULT_LISTEN_PORT = 9310


class ExporterConfig(BaseModel):
    model_config = STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="appliance", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    # Its own broker identity (deploy/mosquitto/acl: `user fleet-exporter` reads status and stats only).
    client_id: str = Field(default="fleet-exporter", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    username: str | None = None
    password_file: PathValue | None = None
    ca_file: PathValue | None = None
    cert_file: PathValue | None = None
    key_file: PathValue | None = None
    # /metrics. Loopback by default: Prometheus on the same host, or put it behind the site's proxy.
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=DEFAULT_LISTEN_PORT, ge=1, le=65535)
    # A device that has sent nothing for this long loses its series, so a fleet that churns through
    # devices does not grow the exporter (and Prometheus) for ever. It must outlast the offline alert's
    # two minutes, or an offline device would vanish before anyone was told.
    drop_after_s: float = Field(default=3600.0, ge=300.0)
    # The most devices kept at once: a broker identity that invents ids cannot exhaust memory.
    max_devices: int = Field(default=100_000, ge=1)
    # A status or stats message larger than this is refused (a stats message is about 2.5 KB).
    max_message_bytes: int = Field(default=65_536, ge=1024)

    @model_validator(mode="after")
    def _cert_and_key(self) -> ExporterConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


def load_exporter_config(path: Path | None, overrides: dict[str, object]) -> ExporterConfig:
    return load_settings(ExporterConfig, path, overrides, ExporterConfigError, "fleet-exporter")

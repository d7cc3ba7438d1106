"""The exporter's errors: part of the firmware's one exception tree (device/errors.py)."""

from __future__ import annotations

from device.errors import EX_CONFIG, ApplianceError


class ExporterConfigError(ApplianceError):
    exit_code = EX_CONFIG

"""The pricing service's errors: part of the firmware's one exception tree."""

from __future__ import annotations

from device.errors import EX_CONFIG, EX_DATAERR, ApplianceError


class CatalogError(ApplianceError):
    """A catalog file or a catalog CSV is missing, unreadable or inconsistent."""

    exit_code = EX_DATAERR


class ServiceConfigError(ApplianceError):
    exit_code = EX_CONFIG

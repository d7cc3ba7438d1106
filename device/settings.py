"""Settings files for the back-end services (the pricing service, the fleet exporter): a TOML file with
command-line flags over it, validated by a strict pydantic model (`STRICT`, as the appliance's own
config in device/config.py: a wrong type is an error, not converted; floats must be finite). Every
problem is one error of the caller's kind (exit 78) that names the file or the flags and the key to
fix."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

from device.errors import ApplianceError

Settings = TypeVar("Settings", bound=BaseModel)

# `port = "1883"` or `k = 20.0` is a mistake to report, not to convert; `inf` is never a setting (a
# stats interval of inf sends no stats, a drop time of inf drops no device). An integer is still a
# float (`drop_after_s = 3600`), as pydantic's strict mode allows.
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
# A file path is written as a TOML string; strict mode alone would only take a Path object.
PathValue = Annotated[Path, Strict(False)]


def read_toml(
    path: Path,
    error: type[ApplianceError],
    what: str = "config file",
    missing: str = "pass an existing file",
    not_utf8: str = "is it the right file? Save it as UTF-8 text",
) -> dict[str, Any]:
    """The TOML file at `path`, or one `error` that names it (`what`) and says what to do: missing,
    unreadable, not UTF-8 (binary garbage: a model file given as a manifest), or not TOML. The one
    reader of the device's config, the model manifest and the back-end services' settings."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {missing}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        byte = f"byte {exc.start} is not UTF-8"
        raise error(f"{what} {path} is not valid UTF-8 TOML ({byte}): {not_utf8}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None


def load_settings(
    model: type[Settings],
    path: Path | None,
    overrides: dict[str, object],
    error: type[ApplianceError],
    program: str,
) -> Settings:
    """`model` from `path` (if any) with the flags that were given (None: not given) over it."""
    data: dict[str, object] = read_toml(path, error) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = f"config file {path}" if path else "the command line"
        # A check across keys (a model validator) has no key of its own: it is the config's.
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise error(f"invalid {program} configuration in {where}: {details}") from None

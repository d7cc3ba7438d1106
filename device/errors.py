"""One exception tree for the whole firmware.

Every error that can reach an operator is an ApplianceError. Its message says what was wrong and what to
do about it. Third-party errors (LiteRT, OpenCV, OS) are translated into this tree at the boundary where
they happen, so that callers never need to know which library raised.
"""

from __future__ import annotations

# sysexits(3) codes: systemd's RestartPreventExitStatus=78 keys off EX_CONFIG so a bad config file does
# not turn into a restart loop.
EX_USAGE = 64
EX_SOFTWARE = 70
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CONFIG = 78
EX_TEMPFAIL = 75


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""

    exit_code = 1


class ConfigError(ApplianceError):
    """The configuration file or environment is invalid. Fix the named key and restart."""

    exit_code = EX_CONFIG


class ModelError(ApplianceError):
    """A model file is missing, corrupt, tampered with, or does not fit its adapter."""

    exit_code = EX_DATAERR


class ModelMismatchError(ModelError):
    """A model loaded fine but its tensors are not what its adapter expects."""


class AcceleratorError(ApplianceError):
    """The Edge TPU that was asked for is not usable and the config forbids falling back to the CPU."""

    exit_code = EX_UNAVAILABLE


class InputError(ApplianceError):
    """An input (image, frame) cannot be read or decoded."""

    exit_code = EX_NOINPUT


class CameraError(ApplianceError):
    """A frame source cannot be opened or stopped delivering frames."""

    exit_code = EX_UNAVAILABLE


class EndOfStreamError(CameraError):
    """A finite source (a video file, a one-pass image folder) has no more frames."""


class LinkError(ApplianceError):
    """The MQTT link is misconfigured (TLS files, credentials). Broker outages are not errors: the
    link retries them by itself."""

    exit_code = EX_CONFIG


class UpdateError(ApplianceError):
    """A model update was refused: bad signature, expired or replayed metadata, a tampered, oversized or
    invalid model. The running model is untouched."""

    exit_code = EX_DATAERR


class UpdateBusyError(UpdateError):
    """Another updater (the daemon or `appliance ota`) holds the lock; try again shortly."""

    exit_code = EX_TEMPFAIL


class UsageError(ApplianceError):
    """A command-line value is malformed (a version, a model id, a channel). Nothing was changed: fix the
    named value and run the command again."""

    exit_code = EX_USAGE


class ReleaseRefusedError(ApplianceError):
    """The release tool will not publish a release whose validation vectors could not catch a broken
    model on a device (docs/ota.md). Nothing was written; add what the message names."""

    exit_code = EX_DATAERR


class RegistryUnavailableError(ApplianceError):
    """The model repository cannot be reached. The current model keeps running; the next check retries."""

    exit_code = EX_UNAVAILABLE


class DatasetError(ApplianceError):
    """An evaluation dataset (`appliance models eval`, `models report`) is missing, unreadable or
    malformed: a missing image, annotations that do not parse, an unknown category, nothing to evaluate.
    The message names the file and what to fix; nothing was evaluated."""

    exit_code = EX_DATAERR


class ManifestError(ModelError):
    """The model manifest cannot be read (missing, not UTF-8 TOML, invalid). Like a bad config, a restart
    will not fix it, so it exits EX_CONFIG; it stays a ModelError for callers that catch those."""

    exit_code = EX_CONFIG


class ReleaseInvalidError(UpdateError):
    """A release failed validation on this device: it does not load, does not fit its kind, fails its
    validation vectors, or its validation inputs are unreadable or too large. The device remembers the
    signed files it refused and does not download them again until the repository publishes new ones."""

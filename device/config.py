"""Typed configuration: a TOML file, then APPLIANCE_* environment variables on top.

Environment overrides use `__` between section and key, e.g. APPLIANCE_RUNTIME__DEVICE=usb:0 sets
`[runtime] device`. An environment value is always a string, so it is converted for its key before
validation: a text or path key takes it as it is (APPLIANCE_DEVICE_ID=1234 is the id "1234"), any other
key parses it as a TOML value (numbers, booleans, arrays: `APPLIANCE_DETECTOR__CLASSES='["person"]'`).

Validation is strict: a value of the wrong type is an error, not coerced (`port = "1883"` and
`tls = "yes"` are refused), floats must be finite, and TOML arrays are the only way to write a list.
We merge by hand instead of using pydantic-settings so that every error can say where the bad
value came from (which file, or which environment variable), which is what an operator needs to fix it.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from device.devicespec import parse_device_spec
from device.errors import ConfigError
from device.image_header import DEFAULT_MAX_PIXELS
from device.kinds import MODEL_KINDS, Kind
from device.settings import STRICT, PathValue, read_toml

ENV_PREFIX = "APPLIANCE_"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# Ids a device must not take: `fleet` is the topic level every device reads release notices from
# (<prefix>/fleet/release, docs/topics.md), the others are the broker ACL's and the PKI's own identities
# (deploy/mosquitto/acl, deploy/pki.sh): fleet-admin, the fleet exporter (fleet-exporter, which reads
# every device's status and stats), the broker, `ca` and `crl` (the CA's own files, which pki.sh
# refuses as names, so no certificate could be issued for such a device), Home Assistant's broker user
# (homeassistant), and the pricing service's copies (pricing-service, pricing-1, pricing-2 ...: every
# id that starts with "pricing"). pki.sh refuses only the site's own names (ca, crl, broker, fleet):
# it issues the service identities' certificates too.
# Compared without case, so that `FLEET` cannot pass for the other.
RESERVED_DEVICE_IDS = frozenset(
    {"fleet", "fleet-admin", "fleet-exporter", "broker", "ca", "crl", "homeassistant"}
)
RESERVED_DEVICE_ID_PREFIX = "pricing"
HOUR = 3600.0
# scrypt$N$r$p$salt$key (base64), as device/live/auth.py writes it.
TOKEN_HASH_PATTERN = r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$"


class _Section(BaseModel):
    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _arrays_are_tuples(cls, data: Any) -> Any:
        # TOML arrays arrive as lists; the frozen sections keep tuples, which strict mode will not
        # convert by itself.
        if isinstance(data, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data


class RuntimeConfig(_Section):
    """Where inference runs. See device.vision.runtime for the device-spec grammar."""

    device: str = "auto"
    fallback: Literal["cpu", "fail"] = "cpu"
    # The libedgetpu soname. Tests point this at a stub delegate built with gcc.
    delegate_library: str = "libedgetpu.so.1"
    num_threads: int = Field(default=2, ge=1, le=16)
    warmup_runs: int = Field(default=2, ge=0, le=50)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        parse_device_spec(value)
        return value


class ModelsConfig(_Section):
    manifest: PathValue = DEFAULT_MODELS_DIR / "manifest.toml"
    detector: str = "centernet-coco-float"
    embedder: str = "efficientnet-lite0-int8"


class DetectorConfig(_Section):
    score_threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    max_detections: int = Field(default=20, ge=1, le=1000)
    # Labels (or numeric class ids as strings) to keep; empty keeps every class.
    classes: tuple[str, ...] = ()
    nms_iou: float = Field(default=0.5, gt=0.0, le=1.0)


class EmbedderConfig(_Section):
    # Fraction of the box size added on each side before cropping: a little background helps the
    # embedder recognise the object, too much lets the surroundings dominate the vector.
    context_margin: float = Field(default=0.1, ge=0.0, le=1.0)


class CameraConfig(_Section):
    # picamera2 | v4l2:/dev/videoN | file:PATH | rtsp://... | images:DIR?fps=15 (see device/camera/spec.py)
    source: str = "picamera2"
    width: int = Field(default=640, ge=32, le=4096)
    height: int = Field(default=480, ge=32, le=4096)
    # Reopen a failed source after 1, 2, 4 ... s, at most this long apart.
    reopen_max_s: float = Field(default=30.0, gt=0, le=HOUR)
    # The most pixels an image file may declare in its header (the image-folder source, `appliance
    # detect` and `embed`): larger ones are refused before they are decoded (device/images.py).
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, le=2**30)


class PipelineConfig(_Section):
    # Run the detector on every Nth frame; the tracker predicts the frames between. The thermal
    # governor raises N when the device runs hot.
    detect_every: int = Field(default=1, ge=1, le=60)
    max_fps: float = Field(default=0.0, ge=0.0, description="0 means as fast as frames come")
    # Embeddings per second, at most (0: no limit). Each costs an embedder invoke and a message.
    embed_budget_per_s: float = Field(default=0.0, ge=0.0)
    # A track is embedded again when its box has changed this much (IoU with the box it was last
    # embedded at below this), or after reembed_interval_s, whichever comes first.
    reembed_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    reembed_interval_s: float = Field(default=10.0, gt=0.0)


class TrackerConfig(_Section):
    iou_match: float = Field(default=0.3, gt=0.0, le=1.0)
    # A track is reported once it was matched on this many detection frames (filters one-off noise).
    min_hits: int = Field(default=2, ge=1)
    # ... and dropped after this many detection frames without a match.
    max_age: int = Field(default=3, ge=1)


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # Topic levels of letters, digits, _ and -, joined by single slashes: no empty level, no wildcard.
    topic_prefix: str = Field(
        default="appliance", max_length=64, pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    # The password lives in its own file (mode 0600), never in this config or the logs.
    password_file: PathValue | None = None
    tls: bool = False
    ca_file: PathValue | None = None
    cert_file: PathValue | None = None
    key_file: PathValue | None = None
    # Reconnect after min, 2*min, 4*min ... up to max seconds, each with +-jitter (a fraction).
    reconnect_min_s: float = Field(default=0.5, gt=0, le=HOUR)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=HOUR)
    reconnect_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    stats_interval_s: float = Field(default=10.0, gt=0)


class OutboxConfig(_Section):
    """Store-and-forward (docs/outbox.md). Sizes favour keeping a day of objects over an SD card's wear."""

    # NORMAL: a power cut can lose the last moments of messages (never corrupts). FULL: fsync per message.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_bytes: int = Field(default=64 * 2**20, ge=64 * 2**10)
    max_age_s: float = Field(default=3 * 86_400.0, gt=0)
    when_full: Literal["drop_oldest", "reject_new"] = "drop_oldest"
    # Unacknowledged messages on the wire at once: bounds the duplicates a crash can cause.
    max_inflight: int = Field(default=32, ge=1, le=1000)
    # Backlog messages per second after an outage, so a fleet coming back does not flood the broker.
    drain_rate_per_s: float = Field(default=500.0, gt=0)


class GovernorConfig(_Section):
    """Thermal and power control (docs/thermal.md). Defaults follow the Pi 4 firmware (throttles at 80 °C)
    and the Coral PCIe driver (steps its clock down from 85 °C)."""

    enabled: bool = True
    interval_s: float = Field(default=2.0, gt=0)  # how often the sensors are read
    cpu_setpoint_c: float = 75.0
    cpu_hard_c: float = 80.0  # pause inference at or above this ...
    cpu_resume_c: float = 72.0  # ... until the CPU is back below this
    tpu_setpoint_c: float = 80.0
    tpu_hard_c: float = 85.0
    tpu_resume_c: float = 78.0
    # Speed up again only this far below the setpoint, and not sooner than dwell_s after a change:
    # the hysteresis that keeps the pace from flapping.
    hysteresis_c: float = Field(default=3.0, ge=0)
    dwell_s: float = Field(default=30.0, ge=0)
    battery_low_percent: float = Field(default=20.0, ge=0, le=100)
    sysfs_root: PathValue = Path("/sys")


class OtaConfig(_Section):
    """Signed over-the-air model updates (docs/ota.md). Off until a repository and its root are given."""

    enabled: bool = False
    # Serves `metadata/` and `targets/` (any static HTTP server); see `appliance-release`.
    repository_url: str = ""
    # The repository's root.json, installed at provisioning: the chain of trust starts here, never at
    # whatever the network serves.
    trusted_root: PathValue | None = None
    channel: str = Field(default="stable", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    kinds: tuple[Kind, ...] = MODEL_KINDS
    interval_s: float = Field(default=3600.0, gt=0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)  # +-20% spreads a fleet's checks out
    max_target_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # refused before downloading
    timeout_s: float = Field(default=30.0, gt=0)  # per read: a server that stops sending
    # A server can also send just often enough to beat timeout_s (a byte every half second) and hold a
    # check for ever, so each check has a budget. The deadline bounds the whole check: 300 s takes a
    # 5.4 MB model through a 20 KB/s link (a weak 3G one); on a slower link the check stops with what
    # arrived kept and the next check resumes it (Range), so the model still gets through, over a few
    # checks. The rate floor cuts a trickle long before the deadline: a request that moved fewer than
    # min_rate_bytes_per_s x rate_window_s bytes (20 KB) in the last rate_window_s is cut, so a byte
    # every 0.5 s ends after 20 s, while an honest link of 1 KB/s or more, or a stall of a few seconds,
    # never is. 0 turns the floor off.
    check_deadline_s: float = Field(default=300.0, gt=0)
    min_rate_bytes_per_s: int = Field(default=1024, ge=0)
    rate_window_s: float = Field(default=20.0, gt=0)
    health_window_s: float = Field(default=300.0, gt=0)
    health_min_frames: int = Field(default=30, ge=1)
    max_errors: int = Field(default=3, ge=1)  # inference errors in the window that roll back
    # New model's median invoke time / the old one's, above which the window rolls back.
    latency_regression: float = Field(default=1.5, gt=1.0)

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> OtaConfig:
        if self.enabled and (not self.repository_url or self.trusted_root is None):
            raise ValueError("ota.enabled needs ota.repository_url and ota.trusted_root (docs/ota.md)")
        return self


class HttpConfig(_Section):
    """The live view and its API (docs/live-view.md). On by default, on loopback only: nothing is exposed
    to the network until an operator binds it elsewhere, and then only behind a token."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # The token's hash, never the token: `appliance http hash-token` prints it (scrypt, device/live/auth.py).
    # Required to listen on anything but loopback; when set, every API call, the frames and the operator
    # actions need the token, on loopback too. Without it (loopback only) viewing is open to the device's
    # own users and operator actions are refused.
    token_hash: str | None = Field(default=None, pattern=TOKEN_HASH_PATTERN)
    # HTTPS when both are set (the device's certificate and key, e.g. the ones deploy/pki.sh issued).
    cert_file: PathValue | None = None
    key_file: PathValue | None = None
    # Frames encoded per second for the viewers, at most: the encoder's whole cost on the device.
    frame_fps: float = Field(default=5.0, gt=0.0, le=30.0)
    # JPEG quality of the live frames: 70 keeps a 640x480 frame near 40 KB, plenty for aiming a camera.
    jpeg_quality: int = Field(default=70, ge=10, le=95)
    # Viewers at once; more are refused (503): each costs a socket and its share of the sending.
    max_viewers: int = Field(default=10, ge=1, le=100)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpConfig:
        if self.enabled and not self.loopback and self.token_hash is None:
            raise ValueError(
                f"http.host {self.host!r} is not loopback, and images must not leave the device without "
                "a token: set http.token_hash (`appliance http hash-token` prints one), or bind 127.0.0.1"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("http.cert_file and http.key_file go together: set both for HTTPS, or neither")
        return self


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery (docs/homeassistant.md). Off by default; while off, each connect
    clears this device's discovery topics, so turning it off removes the device from Home Assistant."""

    enabled: bool = False
    # Home Assistant's own setting (MQTT integration options); the broker ACL names it too.
    discovery_prefix: str = Field(
        default="homeassistant", max_length=64, pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )
    device_name: str | None = Field(default=None, min_length=1, max_length=64)  # default: the device_id
    suggested_area: str | None = Field(default=None, min_length=1, max_length=64)
    # ISO 4217: the last-quote sensor shows prices in this currency (a quote in another shows unknown).
    quote_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`; any other name may resolve to a public address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(_Section):
    # One MQTT topic level (no /, +, # or $), and not one of RESERVED_DEVICE_IDS.
    device_id: str = Field(default="demo-001", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Persistent state: the outbox, the sequence floor, OTA's model slots and journal.
    state_dir: PathValue = Path("/var/lib/appliance")
    runtime: RuntimeConfig = RuntimeConfig()
    models: ModelsConfig = ModelsConfig()
    detector: DetectorConfig = DetectorConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    camera: CameraConfig = CameraConfig()
    pipeline: PipelineConfig = PipelineConfig()
    tracker: TrackerConfig = TrackerConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    governor: GovernorConfig = GovernorConfig()
    ota: OtaConfig = OtaConfig()
    http: HttpConfig = HttpConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()

    @field_validator("device_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        lowered = value.lower()
        if lowered in RESERVED_DEVICE_IDS or lowered.startswith(RESERVED_DEVICE_ID_PREFIX):
            names = ", ".join(sorted(RESERVED_DEVICE_IDS))
            raise ValueError(
                f"{value!r} is reserved for the fleet's own topics and identities ({names}, "
                f"{RESERVED_DEVICE_ID_PREFIX}*): choose another device id"
            )
        return value


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (if given), apply APPLIANCE_* overrides, validate. Raises ConfigError."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = read_toml(path, ConfigError) if path is not None else {}
    origins: dict[tuple[str, ...], str] = {}
    for name, raw in env.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            _set_nested(data, keys, _parse_env_value(keys, raw))
            origins[keys] = f"environment variable {name}"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, origins)) from None
    return _resolve_paths(config, path)


def _parse_env_value(keys: tuple[str, ...], raw: str) -> Any:
    """An environment string converted for the key it sets, so that strict validation sees the type
    the key needs (an unknown key keeps the string; validation names it)."""
    if _takes_text(keys):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _takes_text(keys: tuple[str, ...]) -> bool:
    model: type[BaseModel] = Config
    for key in keys[:-1]:
        field = model.model_fields.get(key)
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return False
        model = section
    field = model.model_fields.get(keys[-1])
    return field is not None and _is_text(field.annotation)


def _is_text(annotation: Any) -> bool:
    """str, Path, a Literal of strings, or an optional one of those."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in args)
    if origin in (Union, UnionType):
        return all(arg is NoneType or _is_text(arg) for arg in args)
    if origin is Annotated:
        return _is_text(args[0])
    return annotation in (str, Path)


def _set_nested(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _describe(exc: ValidationError, path: Path | None, origins: dict[tuple[str, ...], str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc) or "(top level)"
        where = origins.get(loc) or (f"config file {path}" if path else "defaults")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against deploy/config.example.toml)"
        lines.append(f"{key} in {where}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def _resolve_paths(config: Config, path: Path | None) -> Config:
    """Relative paths in a config file are relative to that file, as operators expect."""
    if path is None:
        return config
    base = path.resolve().parent
    models = config.models
    if not models.manifest.is_absolute():
        models = models.model_copy(update={"manifest": base / models.manifest})
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    ota = config.ota
    if ota.trusted_root is not None and not ota.trusted_root.is_absolute():
        ota = ota.model_copy(update={"trusted_root": base / ota.trusted_root})
    http = config.http.model_copy(
        update={
            k: base / v
            for k, v in (("cert_file", config.http.cert_file), ("key_file", config.http.key_file))
            if v is not None and not v.is_absolute()
        }
    )
    return config.model_copy(update={"models": models, "state_dir": state_dir, "ota": ota, "http": http})

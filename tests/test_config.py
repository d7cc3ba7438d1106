"""Config: TOML plus APPLIANCE_* environment, strictly validated, with errors that name the key and file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from device.config import load_config
from device.errors import EX_CONFIG, ConfigError, ModelError
from device.vision.manifest import Manifest
from pricing.config import load_service_config
from pricing.errors import ServiceConfigError

from .cli_helpers import appliance
from .conftest import ROOT

EXAMPLE = ROOT / "deploy" / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    config = load_config(EXAMPLE, environ={})
    defaults = load_config(None, environ={})
    manifest = config.models.manifest
    assert config.model_copy(update={"models": defaults.models}) == defaults  # every other key documented
    assert manifest == Path("/opt/appliance/models/manifest.toml")
    assert (config.models.detector, config.models.embedder) == (
        defaults.models.detector,
        defaults.models.embedder,
    )


def test_values_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'device_id = "shop-7"\n[runtime]\ndevice = "usb:1"\nfallback = "fail"\n'
        '[detector]\nclasses = ["person", "cup"]\n',
    )
    config = load_config(path, environ={})
    assert config.device_id == "shop-7"
    assert (config.runtime.device, config.runtime.fallback) == ("usb:1", "fail")
    assert config.detector.classes == ("person", "cup")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[runtime]\ndevice = "usb:1"\nnum_threads = 1\n')
    config = load_config(
        path,
        environ={
            "APPLIANCE_RUNTIME__DEVICE": "pci:0",
            "APPLIANCE_RUNTIME__NUM_THREADS": "4",
            "APPLIANCE_DETECTOR__CLASSES": '["cup"]',
            "APPLIANCE_DEVICE_ID": "from-env",
            "APPLIANCE_CONFIG": str(path),  # names the file; not a setting
            "HOME": "/root",
        },
    )
    assert config.runtime.device == "pci:0" and config.runtime.num_threads == 4
    assert config.detector.classes == ("cup",)
    assert config.device_id == "from-env"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[runtime]\ndevcie = "usb"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "runtime.devcie" in str(info.value) and str(path) in str(info.value)
    assert "unknown key" in str(info.value)


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kamera in config file .*: unknown key"):
        load_config(write(tmp_path, "[kamera]\nsource = 1\n"), environ={})


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.device in config file .*is not one of auto, cpu"):
        load_config(write(tmp_path, '[runtime]\ndevice = "gpu"\n'), environ={})
    with pytest.raises(ConfigError, match=r"runtime\.fallback in config file"):
        load_config(write(tmp_path, '[runtime]\nfallback = "maybe"\n'), environ={})
    with pytest.raises(ConfigError, match=r"detector\.score_threshold"):
        load_config(write(tmp_path, "[detector]\nscore_threshold = 2.0\n"), environ={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable APPLIANCE_RUNTIME__NUM_THREADS"):
        load_config(None, environ={"APPLIANCE_RUNTIME__NUM_THREADS": "many"})
    with pytest.raises(ConfigError, match=r"runtime\.colour .*unknown key"):
        load_config(None, environ={"APPLIANCE_RUNTIME__COLOUR": "blue"})


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[runtime\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})


def test_relative_manifest_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[models]\nmanifest = "m/manifest.toml"\n'), environ={})
    assert config.models.manifest == tmp_path / "m" / "manifest.toml"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return appliance("config", "check", str(path))


def test_config_check_command(tmp_path: Path) -> None:
    good = check(EXAMPLE)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = check(write(tmp_path, "[runtime]\nthreads = 2\n"))
    assert bad.returncode == EX_CONFIG == 78
    assert "runtime.threads" in bad.stderr and "Traceback" not in bad.stderr


def test_relative_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'state_dir = "state"\n'), environ={})
    assert config.state_dir == tmp_path / "state"


DEMO_CONFIG = ROOT / "deploy" / "demo.toml"


def test_the_demo_config_still_loads() -> None:
    config = load_config(DEMO_CONFIG, environ={"APPLIANCE_MQTT__PORT": "18830"})
    assert (config.device_id, config.mqtt.port, config.mqtt.stats_interval_s) == ("demo-001", 18830, 5.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[mqtt]\nport = "1883"\n', "mqtt.port"),
        ('[mqtt]\ntls = "yes"\n', "mqtt.tls"),
        ("[mqtt]\ntls = 1\n", "mqtt.tls"),
        ("[runtime]\nnum_threads = 2.0\n", "runtime.num_threads"),
        ('[detector]\nscore_threshold = "0.5"\n', "detector.score_threshold"),
        ("[governor]\nenabled = 0\n", "governor.enabled"),
    ],
)
def test_a_wrong_type_is_refused_not_coerced(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key} in config file .*: Input should be a valid"):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[camera]\nreopen_max_s = inf\n", "camera.reopen_max_s"),
        ("[pipeline]\nmax_fps = inf\n", "pipeline.max_fps"),
        ("[detector]\nscore_threshold = nan\n", "detector.score_threshold"),
        ("[governor]\ncpu_hard_c = -inf\n", "governor.cpu_hard_c"),
        ("[mqtt]\nreconnect_max_s = 1e300\n", "mqtt.reconnect_max_s"),
    ],
)
def test_floats_must_be_finite_and_sleeps_bounded(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key} in config file "):
        load_config(write(tmp_path, text), environ={})


def test_an_infinite_float_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"camera\.reopen_max_s in environment variable APPLIANCE_CAMERA__"):
        load_config(None, environ={"APPLIANCE_CAMERA__REOPEN_MAX_S": "inf"})


@pytest.mark.parametrize(
    "device_id",
    [
        "fleet",
        "FLEET",
        "pricing-service",
        "pricing-1",
        "Pricing-7",
        "fleet-admin",
        "fleet-exporter",  # the exporter's ACL identity (issue 17)
        "Fleet-Exporter",
        "broker",
        "ca",
        "crl",
        "CRL",
    ],
)
def test_reserved_device_ids_are_refused(tmp_path: Path, device_id: str) -> None:
    # `fleet` would publish on appliance/fleet/..., the topics every device reads release notices from;
    # the others are the broker's, the CA's (and its CRL's) and the ACL's own identities.
    with pytest.raises(ConfigError, match=rf"device_id in config file .*{device_id!r} is reserved"):
        load_config(write(tmp_path, f'device_id = "{device_id}"\n'), environ={})
    with pytest.raises(ConfigError, match="device_id in environment variable APPLIANCE_DEVICE_ID"):
        load_config(None, environ={"APPLIANCE_DEVICE_ID": device_id})


@pytest.mark.parametrize("prefix", ["/appliance", "appliance/", "a//b"])
def test_topic_prefix_has_no_empty_or_wildcard_levels(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.topic_prefix"):
        load_config(write(tmp_path, f'[mqtt]\ntopic_prefix = "{prefix}"\n'), environ={})


def test_environment_strings_are_converted_for_their_key() -> None:
    config = load_config(
        None,
        environ={
            "APPLIANCE_MQTT__PORT": "8883",
            "APPLIANCE_MQTT__TLS": "true",
            "APPLIANCE_MQTT__CA_FILE": "/etc/appliance/ca.crt",
            "APPLIANCE_CAMERA__REOPEN_MAX_S": "5",
            "APPLIANCE_DEVICE_ID": "1234",  # a string key stays a string, even when it looks like a number
            "APPLIANCE_MQTT__HOST": "1.5",
            "APPLIANCE_OTA__KINDS": '["embedder"]',
        },
    )
    assert (config.mqtt.port, config.mqtt.tls) == (8883, True)
    assert config.mqtt.ca_file == Path("/etc/appliance/ca.crt")
    assert (config.camera.reopen_max_s, config.device_id, config.mqtt.host) == (5.0, "1234", "1.5")
    assert config.ota.kinds == ("embedder",)
    with pytest.raises(ConfigError, match=r"mqtt\.tls in environment variable APPLIANCE_MQTT__TLS"):
        load_config(None, environ={"APPLIANCE_MQTT__TLS": "yes"})


GARBAGE = bytes(range(128, 256)) * 4  # no valid UTF-8 in it anywhere


def test_a_binary_config_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'device_id = "a"\n' + GARBAGE)
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid UTF-8 TOML"):
        load_config(path, environ={})
    result = check(path)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"config file {path} is not valid UTF-8 TOML" in result.stderr
    assert "internal error" not in result.stderr


def test_a_binary_manifest_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_bytes(GARBAGE)
    with pytest.raises(ModelError, match=rf"model manifest {manifest} is not valid UTF-8 TOML"):
        Manifest.load(manifest)
    config = write(tmp_path, f'[models]\nmanifest = "{manifest}"\n')
    result = appliance("--config", str(config), "detect", str(ROOT / "tests" / "data" / "coffee.png"))
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"model manifest {manifest} is not valid UTF-8 TOML" in result.stderr


def test_a_binary_pricing_config_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_bytes(GARBAGE)
    with pytest.raises(ServiceConfigError, match=rf"config file {path} is not valid UTF-8 TOML") as info:
        load_service_config(path, {})
    assert info.value.exit_code == EX_CONFIG

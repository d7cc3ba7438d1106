"""Config: TOML plus APPLIANCE_* environment, strictly validated, with errors that name the key and file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from device.config import load_config
from device.errors import EX_CONFIG, ConfigError

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

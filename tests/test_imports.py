"""The allowed import directions, so that they stay that way (issue 16).

- OTA sees the pipeline only through its port (device/ota/port.py): no module of device.ota imports
  device.pipeline, and a change to the pipeline's counters cannot silently break rollback.
- vision, camera and thermal do not know each other: what several of them need (Edge TPU discovery,
  image files) lives below all three (device/edgetpu.py, device/images.py, ...).
- The pricing service imports from the firmware only what it shares with it on purpose: the wire
  contract (wire, dedupe, the epoch property), the shared MQTT client, the embedder with what it takes
  to run it on catalog photos (vision, the model configs, image files), and the foundations every part
  stands on (the one exception tree and its CLI translation, percentiles, the rate-limited log, the
  settings loader).
  Its benchmarks may also drive the device's real link (outbox, drainer, MQTT link), which is what they
  measure the quote round trip through.
- The fleet exporter (fleet/) reads the devices' published JSON; it shares only the foundations.
- Rigs, the pricing service and the rest of the firmware do not import device.commands; shared rigs
  are in `rigs`.
- A no-op `appliance ota check` imports neither numpy, OpenCV nor LiteRT (issue 12: start-up time).
- A daemon with OTA and the live view off starts without python-tuf or aiohttp (issue 16: start-up
  time): the engine imports the check, and with it tuf, when a check runs; the app imports the live
  view's server when the live view is on.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.ota.engine import Engine

from .cli_helpers import appliance
from .conftest import ROOT
from .mqtt_helpers import daemon_env
from .ota_helpers import new_repo, ota_config, ota_env, release, serve

PRICING_MAY_USE = (
    "device.wire",
    "device.dedupe",
    "device.link.properties",
    "device.link.client",
    "device.link.guarded",
    "device.vision",
    "device.config",
    "device.images",
    "device.image_header",
    "device.errors",
    "device.cli_main",
    "device.metrics",
    "device.ratelog",
    "device.settings",
)
PRICING_BENCH_MAY_ALSO_USE = ("device.link", "device.clock")


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in imports(path)
        if under(name, forbidden)
    ]


def test_ota_does_not_import_the_pipeline() -> None:
    assert offenders("device/ota", ("device.pipeline",)) == []


@pytest.mark.parametrize(
    ("package", "others"),
    [
        ("device/vision", ("device.camera", "device.thermal")),
        ("device/camera", ("device.vision", "device.thermal")),
        ("device/thermal", ("device.vision", "device.camera")),
    ],
)
def test_vision_camera_and_thermal_do_not_import_each_other(package: str, others: tuple[str, ...]) -> None:
    assert offenders(package, others) == []


def test_pricing_imports_only_what_the_firmware_shares_on_purpose() -> None:
    found = []
    for path in modules("pricing"):
        allowed = PRICING_MAY_USE + (PRICING_BENCH_MAY_ALSO_USE if path.name.startswith("bench") else ())
        found += [
            f"{path.relative_to(ROOT)} imports {name}"
            for name in imports(path)
            if under(name, ("device",)) and not under(name, allowed)
        ]
    assert found == []


def test_rigs_and_the_pricing_service_do_not_import_the_appliances_commands() -> None:
    """Editing a benchmark must not break the tests' rigs or the pricing service (tests that test a
    command import it, of course)."""
    found = []
    for package in ("pricing", "fleet", "rigs", "models/release", "deploy/image"):
        found += offenders(package, ("device.commands",))
    for path in modules("tests"):
        if not path.name.startswith("test_"):  # conftest and the rigs beside it
            found += [
                f"{path.relative_to(ROOT)} imports {n}"
                for n in imports(path)
                if under(n, ("device.commands",))
            ]
    for path in modules("device"):
        if "commands" not in path.parts and path.name not in ("cli.py", "cli_main.py", "__main__.py"):
            found += [
                f"{path.relative_to(ROOT)} imports {n}"
                for n in imports(path)
                if under(n, ("device.commands",))
            ]
    assert found == []


# The fleet exporter reads the devices' published JSON and nothing of their insides: the MQTT client
# builder, the clock, the exception tree and the rate-limited log are all it shares with the firmware.
FLEET_MAY_USE = (
    "device.link.client",
    "device.clock",
    "device.errors",
    "device.cli_main",
    "device.ratelog",
    "device.settings",
)


def test_the_fleet_exporter_imports_only_the_shared_foundations() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules("fleet")
        for name in imports(path)
        if under(name, ("device", "pricing")) and not under(name, FLEET_MAY_USE)
    ]
    assert found == []


HEAVY = ("numpy", "cv2", "ai_edge_litert", "tflite_runtime")


def test_a_no_op_ota_check_imports_no_numpy_opencv_or_litert(tmp_path: Path) -> None:
    """A fleet runs `appliance ota check` every few minutes and it nearly always finds nothing new:
    that path must stay clear of numpy, OpenCV and LiteRT, which are most of its start-up time
    (docs/benchmarks.md, "Model updates"). The real command, against a real repository, after an
    earlier check took its one release; `-X importtime` lists every module the process imported."""
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        taken, _ = Engine(ota_config(url, repo, state)).check()
        assert taken[-1].outcome == "activated", taken[-1].reason
        run = appliance("ota", "check", "--json", env={**env, **IMPORT_TIMES}, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [o["outcome"] for o in json.loads(run.stdout)] == ["up_to_date"]
    imported = top_level_packages(run.stderr)
    assert "device" in imported  # the listing is there at all
    assert sorted(imported & set(HEAVY)) == []


# `-X importtime` as an environment variable: every module the process imports, listed on stderr.
IMPORT_TIMES = {"PYTHONPROFILEIMPORTTIME": "1"}


def top_level_packages(importtime: str) -> set[str]:
    """The top-level packages in `-X importtime` output (stderr): every module the process imported."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in importtime.splitlines()
        if line.startswith("import time:") and "|" in line
    }


# Each imported only when its part runs: python-tuf and its signing library when an OTA check runs
# (on the OTA thread), aiohttp when the live view is on.
ON_DEMAND = ("tuf", "securesystemslib", "aiohttp")


def test_a_daemon_with_ota_and_the_live_view_off_starts_without_their_libraries(tmp_path: Path) -> None:
    """The suite starts dozens of daemons, and a device restarted by systemd starts again: python-tuf
    and aiohttp (about 0.2 CPU-s here) are not imported by a daemon that does not use them. The tests'
    daemon (daemon_env) has both off; port 1 has no broker, and the link retries in the background."""
    env = {**daemon_env(1, tmp_path), **IMPORT_TIMES}
    run = appliance("run", "--duration", "0.5", env=env, timeout=60)
    assert run.returncode == 0 and "appliance stopped after" in run.stderr, run.stderr[-2000:]
    imported = top_level_packages(run.stderr)
    assert {"device", "cv2", "paho"} <= imported  # the listing is there, and the daemon really ran
    assert sorted(imported & set(ON_DEMAND)) == []

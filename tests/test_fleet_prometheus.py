"""The fleet on the tools operators run (issue 17): Debian's real Prometheus scrapes the real
fleet-exporter while two real daemons run on the demo source; the alert rules are checked and
unit-tested by promtool; deploy/prometheus/prometheus.yml is a valid config."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from rigs.broker import free_port, wait_for_port

from .broker import Mosquitto
from .conftest import ROOT
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env, wait_until

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
NEEDED = "Debian's prometheus package (make system-deps installs it)"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), NEEDED
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS_DIR, timeout=60, check=False
    )


def test_the_shipped_config_and_rules_are_valid() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "appliance-alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 9 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_every_alert_fires_on_its_case_and_stays_quiet_beside_it() -> None:
    result = promtool("test", "rules", "appliance-alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        line.split("alertname:")[1].strip()
        for line in (PROMETHEUS_DIR / "appliance-alerts_test.yml").read_text().splitlines()
        if "alertname:" in line
    }
    defined = {
        line.split("alert:")[1].strip()
        for line in (PROMETHEUS_DIR / "appliance-alerts.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    assert tested == defined and len(defined) == 9  # no alert without its test


class Prometheus:
    """Debian's prometheus on a free loopback port, with a temporary data directory, scraping the
    exporter every second and evaluating the shipped alert rules every second."""

    def __init__(self, directory: Path, target_port: int) -> None:
        assert shutil.which("prometheus"), NEEDED
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{PROMETHEUS_DIR / 'appliance-alerts.yml'}']\n"
            "scrape_configs:\n"
            f"  - job_name: appliance-fleet\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        self.log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process)
        # The port opens before the storage is: until then every query is a 503.
        assert wait_until(self.ready, 30), "prometheus did not become ready"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:  # urllib's HTTPError (the 503) is an OSError too
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture()
def exporter(broker: Mosquitto, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "exporter.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet", "run", "--port", str(broker.port), "--listen-port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process)
    yield port
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    log.close()


def fake_sysfs(root: Path, tpu_millidegrees: int) -> Path:
    """A Pi's sensor files (the hardware this machine lacks): one Edge TPU's temperature, and the
    firmware's throttle flags saying under-voltage now."""
    apex = root / "class" / "apex" / "apex_0"
    apex.mkdir(parents=True)
    (apex / "temp").write_text(f"{tpu_millidegrees}\n")
    firmware = root / "devices" / "platform" / "soc" / "soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text("0x50005\n")
    return root


def test_prometheus_scrapes_two_daemons_and_sees_one_go_offline(
    broker: Mosquitto, exporter: int, tmp_path: Path
) -> None:
    prometheus = Prometheus(tmp_path, exporter)
    status = Collector(broker.port, "appliance/+/status")
    daemons = {}
    for name, millidegrees in (("shop-a", 48000), ("shop-b", 52000)):
        env = daemon_env(
            broker.port,
            tmp_path / name,
            name,
            APPLIANCE_CAMERA__SOURCE="images:demo?fps=5",
            APPLIANCE_PIPELINE__MAX_FPS="2",
            APPLIANCE_MODELS__DETECTOR="ssdlite-person-int8",
            APPLIANCE_GOVERNOR__SYSFS_ROOT=str(fake_sysfs(tmp_path / f"{name}-sys", millidegrees)),
        )
        daemons[name] = start_daemon(env, log=tmp_path / f"{name}.log")
    try:
        for name, celsius in (("shop-a", 48.0), ("shop-b", 52.0)):
            fps = f'appliance_fps{{device="{name}",kind="processed"}}'
            found = wait_until(partial(prometheus.query, fps), 90)
            assert found, (
                f"no appliance_fps for {name} in Prometheus: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
            )
            tpu = f'appliance_tpu_temperature_celsius{{device="{name}",tpu="apex_0"}}'
            assert wait_until(partial(prometheus.value, tpu), 30)  # 48.0 and 52.0 are truthy
            assert prometheus.value(tpu) == celsius
            assert prometheus.value(f'appliance_throttle{{device="{name}",flag="under_voltage"}}') == 1.0
            assert prometheus.value(f'appliance_online{{device="{name}"}}') == 1.0
        daemons["shop-b"].kill()  # no goodbye: the broker publishes its will
        status.wait_for(
            lambda: any(b'"lost"' in m.payload for m in status.on("shop-b/status")), 30, "the will"
        )
        assert wait_until(lambda: prometheus.value('appliance_online{device="shop-b"}') == 0.0, 30)
        pending = 'ALERTS{alertname="ApplianceOffline",device="shop-b",alertstate="pending"}'
        assert wait_until(lambda: prometheus.value(pending) == 1.0, 30), prometheus.query("ALERTS")
        assert prometheus.value('appliance_online{device="shop-a"}') == 1.0
        assert prometheus.query('ALERTS{alertname="ApplianceOffline",device="shop-a"}') == []
    finally:
        status.close()
        prometheus.stop()

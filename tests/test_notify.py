"""The daemon's sd_notify messages, received on a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.notify import Notifier

from .broker import Mosquitto
from .cli_helpers import appliance
from .daemons import start_daemon
from .mqtt_helpers import daemon_env


@pytest.fixture()
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def collect(
    sock: socket.socket, seconds: float, enough: Callable[[list[str]], bool] = lambda _m: False
) -> list[str]:
    """Messages received within `seconds`, or until `enough` says so."""
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not enough(messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def after_ready(messages: list[str]) -> list[str]:
    ready = [i for i, m in enumerate(messages) if m.startswith("READY=1")]
    return messages[ready[0] :] if ready else []


def run_daemon(broker: Mosquitto, tmp_path: Path, source: str) -> subprocess.Popen[bytes]:
    env = daemon_env(
        broker.port,
        tmp_path / "state",
        APPLIANCE_CAMERA__SOURCE=source,
        NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
        WATCHDOG_USEC="1000000",
    )
    return start_daemon(env, log=tmp_path / "daemon.log")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_ready_status_and_watchdog_while_frames_flow(
    broker: Mosquitto, tmp_path: Path, notify_socket: socket.socket
) -> None:
    daemon = run_daemon(broker, tmp_path, "images:demo?fps=15")
    try:
        messages = collect(notify_socket, 60, lambda m: after_ready(m).count("WATCHDOG=1") >= 5)
        stop(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    ready = after_ready(messages)
    assert ready and "STATUS=running: device test-dev" in ready[0]
    assert ready.count("WATCHDOG=1") >= 5  # every 0.5 s for a 1 s WatchdogSec
    assert any(m.startswith("STATUS=camera running") for m in messages)
    assert "STOPPING=1" in collect(notify_socket, 0.5) + messages


def test_no_watchdog_when_the_camera_delivers_nothing(
    broker: Mosquitto, tmp_path: Path, notify_socket: socket.socket
) -> None:
    daemon = run_daemon(broker, tmp_path, "v4l2:/dev/video99")
    try:
        messages = collect(notify_socket, 60, lambda m: any("camera reopening" in x for x in m))
        messages += collect(notify_socket, 4)  # 8 watchdog periods with no frame
        assert daemon.poll() is None  # it keeps trying; systemd's watchdog decides
        stop(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert any(m.startswith("READY=1") for m in messages)
    assert "WATCHDOG=1" not in messages
    assert any("camera reopening" in m for m in messages)


def test_a_bad_config_exits_78_so_systemd_does_not_restart_it(tmp_path: Path) -> None:
    result = appliance("run", env={"APPLIANCE_CAMERA__WIDTH": "many", "APPLIANCE_STATE_DIR": str(tmp_path)})
    assert result.returncode == 78 and "camera.width" in result.stderr


def test_outside_systemd_notify_is_a_no_op() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    notifier.ready("x")  # nothing to send to, nothing raised
    assert (
        Notifier(environ={"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "20000000"}).watchdog_interval_s
        == 10.0
    )

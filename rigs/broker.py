"""A throw-away mosquitto on a free loopback port: for the benchmarks, the pricing benchmarks, the tests
and the image boot test alike."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from device.errors import ApplianceError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    """mosquitto's path: Debian installs it in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise ApplianceError("mosquitto is not installed: apt-get install mosquitto (make test does it)")
    return found


@contextmanager
def local_broker() -> Iterator[int]:
    """Start mosquitto, yield its port, stop it."""
    binary = mosquitto_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="appliance-broker-") as folder:
        config = Path(folder) / "mosquitto.conf"
        # max_inflight / max_queued raised so the broker, not its defaults, is what a benchmark measures.
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n"
        )
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, process)
            yield port
        finally:
            process.terminate()
            process.wait(5)


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the broker accepts connections; ApplianceError if it exits or takes 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    raise ApplianceError(f"mosquitto did not start on port {port}")

"""A real mosquitto for the tests, on a free loopback port, that tests can stop, restart and kill."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail("mosquitto is not installed; `make test` installs it with apt-get")
    return found


class Mosquitto:
    def __init__(self, directory: Path, port: int | None = None, persistent: bool = False) -> None:
        """`persistent` keeps sessions and queued messages across a restart (saved on shutdown)."""
        self.directory = directory
        self.port = port or free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        persistence = (
            f"persistence true\npersistence_location {directory}/\n" if persistent else "persistence false\n"
        )
        # Run as whoever runs the tests: as root, mosquitto would otherwise drop to the `mosquitto`
        # user, which cannot write its persistence file into the test's directory.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}{user}"
            "max_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

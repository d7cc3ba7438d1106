"""A real mosquitto for the tests, on a free loopback port, that tests can stop, restart and kill."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from device.errors import ApplianceError
from rigs.broker import free_port, mosquitto_binary, wait_for_port

__all__ = ["Mosquitto", "free_port"]


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
        try:
            wait_for_port(self.port, self.process)
        except ApplianceError as exc:
            raise RuntimeError(f"{exc}: {self.log.read_text()[-2000:]}") from None

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

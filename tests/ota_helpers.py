"""OTA test parts: a real HTTP server over a real TUF repository made by the release tool."""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from release.publish import NewRelease, add_release
from release.repository import Repository

from device.config import Config, load_config

from .conftest import DATA, MODELS
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env

EMBEDDER = "efficientnet-lite0-int8"
PHOTOS = [DATA / "coffee.png", DATA / "chelsea.png"]


@dataclass
class Faults:
    """What the server does wrong on purpose."""

    break_after: int | None = None  # bytes of a target body, then the connection drops (once)
    ranges: list[str] = field(default_factory=list)  # Range headers received


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus Range requests (http.server has none) and an injectable broken connection."""

    faults: Faults

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header:
            self.faults.ranges.append(header)
            start = int(header.removeprefix("bytes=").split("-")[0])
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(HTTPStatus.OK)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.faults.break_after
        if cut is not None and "/targets/models/" in self.path and len(body) > cut:
            self.faults.break_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@contextmanager
def serve(directory: Path, faults: Faults | None = None) -> Iterator[str]:
    """Serve `directory` on a free loopback port; yields its URL."""
    handler = type("Handler", (_Handler,), {"faults": faults or Faults()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def new_repo(tmp_path: Path) -> Repository:
    repo = Repository(tmp_path / "repo", tmp_path / "keys")
    repo.init()
    return repo


def release(repo: Repository, version: str = "1.1.0", percent: int = 100, **kw: Any) -> str:
    edit = kw.pop("edit", None)
    new = NewRelease(
        MODELS / "manifest.toml",
        kw.pop("model_id", EMBEDDER),
        version,
        kw.pop("channel", "stable"),
        percent,
        kw.pop("photos", PHOTOS),
        **kw,
    )
    return add_release(repo, new, edit)


def ota_env(url: str, repo: Repository, state: Path, **extra: str) -> dict[str, str]:
    return {
        "APPLIANCE_DEVICE_ID": "ota-dev",
        "APPLIANCE_STATE_DIR": str(state),
        "APPLIANCE_RUNTIME__DEVICE": "cpu",
        "APPLIANCE_OTA__ENABLED": "true",
        "APPLIANCE_OTA__REPOSITORY_URL": url,
        "APPLIANCE_OTA__TRUSTED_ROOT": str(repo.path / "root.json"),
        "APPLIANCE_OTA__KINDS": '["embedder"]',
        **extra,
    }


TOPIC = "appliance/ota-dev"


@dataclass
class Rig:
    """A repository on a real HTTP server, a subscriber on the device's topics, and the daemon's
    environment; `start()` runs the real daemon, stopped when the rig closes."""

    repo: Repository
    url: str
    state: Path
    env: dict[str, str]
    collector: Collector
    log: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        self.started.append(start_daemon(self.env, log=self.log))
        return self.started[-1]

    def status(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        """The first online status that satisfies `predicate`, waiting up to `timeout`."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            online = (m.json() for m in self.collector.on(f"{TOPIC}/status"))
            found.extend(s for s in online if s.get("state") == "online" and predicate(s))
            return bool(found)

        self.collector.wait_for(seen, timeout, what)
        return found[0]


@contextmanager
def daemon_rig(port: int, tmp_path: Path, repo: Repository, **extra: str) -> Iterator[Rig]:
    """The daemon on the test broker, the demo photos at 15 fps, OTA from `repo`."""
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = {
            **daemon_env(port, state, "ota-dev"),
            **ota_env(url, repo, state),
            "APPLIANCE_CAMERA__SOURCE": "images:demo?fps=15&seconds=3",
            **extra,
        }
        rig = Rig(repo, url, state, env, Collector(port, f"{TOPIC}/#"), tmp_path / "daemon.log")
        try:
            yield rig
        finally:
            for daemon in rig.started:
                if daemon.poll() is None:
                    daemon.terminate()
                    daemon.wait(10)
            rig.collector.close()


def embedder_version(status: dict[str, Any]) -> str:
    return str(status["models"]["embedder"]["version"])


def last_outcome(status: dict[str, Any]) -> str:
    last = status["ota"].get("last") or {}
    return str(last.get("outcome", ""))


def ota_config(url: str, repo: Repository, state: Path, **extra: str) -> Config:
    return load_config(environ=ota_env(url, repo, state, **extra))

"""OTA test parts: a real HTTP server over a real TUF repository made by the release tool.

Two servers: Python's http.server (HTTP/1.0 unless a fault needs HTTP/1.1 keep-alive), with faults
injected on purpose (a dropped connection, a trickle, an error body that comes late), and nginx
(HTTP/1.1, keep-alive), which is what people serve static repositories with.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from release.publish import NewRelease, add_release
from release.repository import Repository

from device.clock import Clock, SystemClock
from device.config import Config, DetectorConfig, EmbedderConfig, PipelineConfig, TrackerConfig, load_config
from device.pace import PaceController
from device.pipeline import Pipeline
from device.vision.embedder import Embedder
from device.vision.models import make_detector
from device.vision.runtime import LoadedModel
from device.vision.tracker import Tracker
from rigs.broker import free_port, wait_for_port
from rigs.http import serving

from .conftest import DATA, MODELS
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env

EMBEDDER = "efficientnet-lite0-int8"
PHOTOS = [DATA / "coffee.png", DATA / "chelsea.png"]
NGINX = "/usr/sbin/nginx"


@dataclass
class Faults:
    """What the server does wrong on purpose."""

    break_after: int | None = None  # bytes of a target body, then the connection drops (once)
    ranges: list[str] = field(default_factory=list)  # Range headers received
    # A trickle: files whose path contains `slow` get `slow_after` bytes at once, then one byte every
    # `slow_every_s` until `release` is set (then the rest at once). `trickling` is set when one starts.
    slow: str | None = None
    slow_after: int = 0
    slow_every_s: float = 0.5
    trickling: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    # HTTP/1.1 keep-alive, and the body of these error statuses sent `late_body_s` after their headers.
    late_body_s: float | None = None
    late_statuses: tuple[int, ...] = (404, 416)


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus Range requests (http.server has none) and injectable faults."""

    faults: Faults

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self._error(HTTPStatus.NOT_FOUND, {})
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header:
            self.faults.ranges.append(header)
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self._error(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{len(data)}"}
                )
                return
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
        if self.faults.slow is not None and self.faults.slow in self.path:
            self._trickle(body)
            return
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, headers: dict[str, str]) -> None:
        """An error with a small HTML body, on a connection kept alive; the body comes late if asked."""
        body = f"<html><body>{status.value} {status.phrase}</body></html>\n".encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "text/html", "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        late = self.faults.late_body_s
        if late is not None and status in self.faults.late_statuses:
            self.wfile.flush()
            time.sleep(late)  # the fault itself: headers now, the body later, as a busy server may
        self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        faults = self.faults
        try:
            self.wfile.write(body[: faults.slow_after])
            self.wfile.flush()
            faults.trickling.set()
            sent = faults.slow_after
            while sent < len(body) and not faults.release.wait(faults.slow_every_s):
                self.wfile.write(body[sent : sent + 1])
                self.wfile.flush()
                sent += 1
            self.wfile.write(body[sent:])
        except OSError:  # the client cut the connection: what the test wants to see
            self.close_connection = True


Serve = Callable[[Path, "Faults | None"], AbstractContextManager[str]]


@contextmanager
def serve(directory: Path, faults: Faults | None = None) -> Iterator[str]:
    """Serve `directory` on a free loopback port with http.server; yields its URL."""
    faults = faults or Faults()
    protocol = "HTTP/1.1" if faults.late_body_s is not None else "HTTP/1.0"
    handler = type("Handler", (_Handler,), {"faults": faults, "protocol_version": protocol})
    with serving(functools.partial(handler, directory=str(directory)), on_exit=faults.release.set) as url:
        yield url  # on exit, releasing the faults ends any trickle


@contextmanager
def serve_nginx(directory: Path, faults: Faults | None = None) -> Iterator[str]:
    """Serve `directory` with nginx (HTTP/1.1, keep-alive) on a free loopback port, as the test's user;
    yields its URL. nginx cannot drop a connection half way on purpose, so `faults.break_after` puts a
    relay in front of it that does; the Range headers nginx received go to `faults.ranges` at the end."""
    if not Path(NGINX).exists():
        raise RuntimeError(f"{NGINX} is missing: `make system-deps` installs nginx")
    faults = faults or Faults()
    work = directory.parent / f"nginx-{directory.name}"
    work.mkdir(exist_ok=True)
    port = free_port()
    # As root, nginx would run its workers as `nobody`, who cannot read the test's directory.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"{kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (work / "nginx.conf").write_text(
        f"daemon off;\n{user}pid {work}/nginx.pid;\nerror_log {work}/error.log;\nworker_processes 1;\n"
        "events {}\nhttp {\n"
        "log_format ranges '$connection $connection_requests $status \"$http_range\" $request_uri';\n"
        f"access_log {work}/access.log ranges;\n{temp}"
        f"server {{ listen 127.0.0.1:{port}; root {directory}; keepalive_timeout 60; }}\n}}\n"
    )
    with (work / "stderr.log").open("ab") as log:
        process = subprocess.Popen(
            [NGINX, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
            stdout=log,
            stderr=log,
        )
    try:
        try:
            wait_for_port(port, process)
        except Exception:
            raise RuntimeError(f"nginx did not start: {(work / 'error.log').read_text()[-2000:]}") from None
        if faults.break_after is None:
            yield f"http://127.0.0.1:{port}"
        else:
            with _CuttingRelay(port, faults) as relay_port:
                yield f"http://127.0.0.1:{relay_port}"
    finally:
        process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
        process.wait(10)
        faults.ranges.extend(nginx_log(work)["ranges"])


def nginx_log(work: Path) -> dict[str, Any]:
    """From nginx's access log: the Range headers it received, and the most requests one kept-alive
    connection carried."""
    lines = (work / "access.log").read_text().splitlines() if (work / "access.log").exists() else []
    fields = [re.match(r'(\d+) (\d+) (\d+) "([^"]*)" (\S+)', line) for line in lines]
    matched = [m.groups() for m in fields if m]
    return {
        "ranges": [r for _, _, _, r, _ in matched if r != "-"],
        "most_per_connection": max((int(n) for _, n, _, _, _ in matched), default=0),
        "statuses": [int(s) for _, _, s, _, _ in matched],
    }


class _CuttingRelay:
    """A byte-for-byte TCP relay in front of nginx that drops one connection after `faults.break_after`
    bytes of a response longer than that (once): a server that dies half way through a download."""

    def __init__(self, upstream: int, faults: Faults) -> None:
        self.upstream = upstream
        self.faults = faults
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> int:
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self.listener.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for sock in self.sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, server]
            answered = [0]  # response bytes since the client last spoke
            threading.Thread(target=self._pump, args=(client, server, answered, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, answered, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answered: list[int], response: bool) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                if not response:
                    answered[0] = 0
                    sink.sendall(data)
                    continue
                cut = self.faults.break_after
                if cut is not None and answered[0] + len(data) > cut:
                    self.faults.break_after = None
                    sink.sendall(data[: cut - answered[0]])
                    break
                answered[0] += len(data)
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


SERVERS: dict[str, Serve] = {"http.server": serve, "nginx": serve_nginx}


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
def daemon_rig(
    port: int,
    tmp_path: Path,
    repo: Repository,
    faults: Faults | None = None,
    extra: dict[str, str] | None = None,
) -> Iterator[Rig]:
    """The daemon on the test broker, the demo photos at 15 fps, OTA from `repo` (served with `faults`)."""
    state = tmp_path / "state"
    with serve(repo.path, faults) as url:
        env = {
            **daemon_env(port, state, "ota-dev"),
            **ota_env(url, repo, state),
            "APPLIANCE_CAMERA__SOURCE": "images:demo?fps=15&seconds=3",
            **(extra or {}),
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


def light_pipeline(load: Callable[[str], LoadedModel], clock: Clock | None = None) -> Pipeline:
    """The person SSD and the embedder, the lightest models there are, for tests of swaps and windows."""
    clock = clock or SystemClock()
    config = PipelineConfig()
    detector = make_detector(load("ssdlite-person-int8"), DetectorConfig())
    embedder = Embedder(load("efficientnet-lite0-int8"), EmbedderConfig())
    pace = PaceController(config, clock)
    return Pipeline(detector, embedder, Tracker(TrackerConfig()), pace, lambda m: m, config, clock)

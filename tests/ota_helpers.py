"""OTA test parts: a real HTTP server over a real TUF repository made by the release tool."""

from __future__ import annotations

import functools
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
from .mqtt_helpers import daemon_env

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


def ota_daemon_env(port: int, url: str, repo: Repository, state: Path, **extra: str) -> dict[str, str]:
    """The real daemon on the test broker, the demo photos at 15 fps, and OTA from `url`."""
    return {
        **daemon_env(port, state, "ota-dev"),
        **ota_env(url, repo, state),
        "APPLIANCE_CAMERA__SOURCE": "images:demo?fps=15&seconds=3",
        **extra,
    }


def ota_config(url: str, repo: Repository, state: Path, **extra: str) -> Config:
    return load_config(environ=ota_env(url, repo, state, **extra))

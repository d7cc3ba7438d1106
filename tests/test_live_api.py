"""The live view's HTTP side against the real daemon and a real mosquitto: the API is the MQTT JSON, the
encoder runs only for a viewer, the token guards everything, and bad requests get 4xx, not a dead daemon."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from device.config import load_config
from device.errors import ConfigError
from device.live.auth import hash_token, verify_token

from .broker import Mosquitto, free_port
from .cli_helpers import appliance
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env, wait_until

TOPIC = "appliance/test-dev"
TOKEN = "correct horse battery staple"


@dataclass
class Live:
    """A daemon with its live view on a free loopback port, and a subscriber to everything it publishes."""

    process: subprocess.Popen[bytes]
    port: int
    collector: Collector
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.collector.on(f"{TOPIC}/stats")]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_live(broker: Mosquitto, tmp_path: Path, token: str | None = TOKEN, **extra: str) -> Live:
    port = free_port()
    env = daemon_env(
        broker.port,
        tmp_path / "state",
        APPLIANCE_HTTP__ENABLED="true",
        APPLIANCE_HTTP__PORT=str(port),
        APPLIANCE_CAMERA__SOURCE="images:demo?fps=15",
        **extra,
    )
    if token is not None:
        env["APPLIANCE_HTTP__TOKEN_HASH"] = hash_token(token)
    collector = Collector(broker.port, "appliance/#")
    log = tmp_path / "daemon.log"
    process = start_daemon(env, log=log)
    live = Live(process, port, collector, log)
    assert wait_until(lambda: "live view on" in live.log_text() or process.poll() is not None, 60), (
        live.log_text()
    )
    assert process.poll() is None, live.log_text()
    return live


def stop_live(live: Live) -> None:
    live.collector.close()
    if live.process.poll() is None:
        live.process.terminate()
        live.process.wait(10)


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, bytes]:
    """The status and body of one request; an HTTP error is an answer here, not an exception."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_json(url: str, body: object, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    return request(url, json.dumps(body).encode(), headers, "POST")


async def _watch(url: str, headers: dict[str, str], frames: int) -> list[bytes]:
    """Connects as a viewer and keeps the first `frames` frame messages."""
    got: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                got.append(message.data)
                if len(got) >= frames:
                    break
    return got


def watch(live: Live, frames: int, token: str = TOKEN) -> list[bytes]:
    url = f"ws://127.0.0.1:{live.port}/ws"
    return asyncio.run(asyncio.wait_for(_watch(url, bearer(token), frames), 60))


@pytest.fixture()
def live(broker: Mosquitto, tmp_path: Path) -> Iterator[Live]:
    instance = start_live(broker, tmp_path)
    yield instance
    stop_live(instance)


def test_no_viewer_no_encoding_then_one_viewer_gets_frames_with_their_tracks(live: Live) -> None:
    # The API is used (status, stats, a snapshot), but nobody watches: the encoder thread never starts.
    live.collector.wait_for(lambda: len(live.stats()) >= 3, 60, "3 stats messages")
    assert request(f"{live.base}/api/status", headers=bearer())[0] == 200
    assert request(f"{live.base}/api/stats", headers=bearer())[0] == 200
    status, jpeg = request(f"{live.base}/api/snapshot.jpg", headers=bearer())
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    count = len(live.stats())
    live.collector.wait_for(lambda: len(live.stats()) >= count + 2, 10, "2 more stats messages")
    quiet = live.stats()[-1]
    assert quiet["totals"]["processed"] > 10  # frames went through the pipeline all along ...
    assert quiet["live"]["encoder_starts"] == 0 and quiet["live"]["frames_encoded"] == 0  # ... unencoded
    assert quiet["live"]["snapshots"] == 1

    frames = watch(live, 3)
    for message in frames:
        (length,) = struct.unpack_from("<I", message)
        header = json.loads(message[4 : 4 + length])
        assert header["width"] == 640 and header["height"] == 480
        assert message[4 + length : 4 + length + 2] == b"\xff\xd8"  # a JPEG after the header
        for track in header["tracks"]:
            assert 0 <= track["box"][0] < track["box"][2] <= 1 and track["label"]
    indexes = [json.loads(m[4 : 4 + struct.unpack_from("<I", m)[0]])["index"] for m in frames]
    assert indexes == sorted(set(indexes))  # newer frames each time, none twice
    live.collector.wait_for(
        lambda: live.stats()[-1]["live"]["frames_encoded"] >= 3 and live.stats()[-1]["live"]["viewers"] == 0,
        10,
        "stats counting the frames encoded, after the viewer left",
    )
    assert live.stats()[-1]["live"]["encoder_starts"] == 1


def test_api_stats_and_status_are_the_json_of_the_mqtt_topics(live: Live) -> None:
    live.collector.wait_for(lambda: len(live.stats()) >= 2, 60, "2 stats messages")
    status, body = request(f"{live.base}/api/stats", headers=bearer())
    api = json.loads(body)
    assert status == 200 and api in live.stats(), "not one of the stats published on MQTT"
    retained = [m.json() for m in live.collector.on(f"{TOPIC}/status")]
    status, body = request(f"{live.base}/api/status", headers=bearer())
    assert status == 200 and json.loads(body) == retained[-1]


@pytest.mark.heavy
def test_the_token_guards_everything_but_the_page(live: Live) -> None:
    for path in ("/api/status", "/api/stats", "/api/snapshot.jpg", "/ws"):
        assert request(live.base + path)[0] == 401, path
        assert request(live.base + path, headers=bearer("wrong"))[0] == 401, path
    assert post_json(f"{live.base}/api/pause", {}, token="wrong")[0] == 401
    assert post_json(f"{live.base}/api/login", {"token": "wrong"}, token=None)[0] == 401
    status, page = request(live.base + "/")
    assert status == 200 and b"/static/live.js" in page  # the page itself holds nothing to protect
    # A good login gives a session cookie that opens the API.
    login = urllib.request.Request(
        f"{live.base}/api/login",
        json.dumps({"token": TOKEN}).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(login, timeout=10) as answer:
        cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0]
    assert request(f"{live.base}/api/status", headers={"Cookie": session})[0] == 200
    assert request(f"{live.base}/api/status", headers={"Cookie": "live_session=forged"})[0] == 401


def test_malformed_requests_get_4xx_and_the_daemon_keeps_running(live: Live) -> None:
    base = live.base
    assert post_json(f"{base}/api/pace", {"detect_every": 0})[0] == 400
    assert post_json(f"{base}/api/pace", {"surprise": 1})[0] == 400
    assert (
        request(f"{base}/api/pace", b"{not json", {**bearer(), "Content-Type": "application/json"}, "POST")[0]
        == 400
    )
    assert request(f"{base}/api/pause", b"{}", {**bearer(), "Content-Type": "text/plain"}, "POST")[0] == 415
    assert (
        request(f"{base}/api/pause", b"x" * 100_000, {**bearer(), "Content-Type": "application/json"})[0]
        == 413
    )
    assert request(f"{base}/api/pause", headers=bearer())[0] == 405  # a GET
    assert request(f"{base}/nothing-here", headers=bearer())[0] == 404
    assert request(f"{base}/static/../../config.py")[0] == 404
    assert post_json(f"{base}/api/login", "not an object", token=None)[0] == 400
    cross_site = {**bearer(), "Content-Type": "application/json", "Origin": "http://evil.example"}
    assert request(f"{base}/api/pause", b"{}", cross_site, "POST")[0] == 403
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01 this is no HTTP\r\n\r\n")
        assert raw.recv(64).split(b" ")[1] == b"400"
    # Still running, still answering, and the pace was never touched by the bad requests.
    assert live.process.poll() is None
    status, body = request(f"{base}/api/status", headers=bearer())
    assert status == 200 and json.loads(body)["state"] == "online"
    live.collector.wait_for(lambda: len(live.stats()) >= 1, 30, "stats")
    count = len(live.stats())
    live.collector.wait_for(lambda: len(live.stats()) > count, 10, "one more stats message")
    assert (
        live.stats()[-1]["pace"]["paused"] is False
        and live.stats()[-1]["pace"]["reason"] != "operator override"
    )


def test_pace_and_pause_from_the_api_go_through_the_operator_commands(live: Live) -> None:
    status, body = post_json(f"{live.base}/api/pace", {"detect_every": 3, "expires_s": 60})
    assert status == 200 and json.loads(body)["pace"]["detect_every"] == 3
    assert json.loads(body)["pace"]["reason"] == "operator override"
    status, body = post_json(f"{live.base}/api/pause", {})
    assert status == 200 and json.loads(body)["pace"]["paused"] is True
    assert "paused by operator command" in live.log_text()  # the cmd/pause path, not a copy of it
    status, body = post_json(f"{live.base}/api/resume", {})
    assert status == 200 and json.loads(body)["pace"]["paused"] is False


def test_without_a_token_viewing_is_open_on_loopback_and_actions_are_refused(
    broker: Mosquitto, tmp_path: Path
) -> None:
    live = start_live(broker, tmp_path, token=None)
    try:
        assert request(f"{live.base}/api/status")[0] == 200
        session = json.loads(request(f"{live.base}/api/session")[1])
        assert session == {"token_required": False, "authenticated": False, "actions": False}
        status, body = post_json(f"{live.base}/api/pause", {}, token=None)
        assert status == 403 and b"token_hash" in body
    finally:
        stop_live(live)


def test_a_network_bind_without_a_token_refuses_to_start_with_78(broker: Mosquitto, tmp_path: Path) -> None:
    env = daemon_env(
        broker.port, tmp_path / "state", APPLIANCE_HTTP__ENABLED="true", APPLIANCE_HTTP__HOST="0.0.0.0"
    )
    result = appliance("run", env=env, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "http.host '0.0.0.0' is not loopback" in result.stderr and "token_hash" in result.stderr


def test_the_token_is_stored_as_a_salted_scrypt_hash() -> None:
    stored = hash_token(TOKEN)
    assert stored.startswith("scrypt$16384$8$1$") and TOKEN not in stored
    assert stored != hash_token(TOKEN)  # salted
    assert verify_token(TOKEN, stored)
    assert not verify_token(TOKEN + "x", stored) and not verify_token("", stored)
    assert not verify_token(TOKEN, "scrypt$broken")


def test_the_live_view_is_on_by_default_on_loopback_only() -> None:
    http = load_config(None, {}).http
    assert http.enabled and (http.host, http.port) == ("127.0.0.1", 8080) and http.token_hash is None
    assert http.frame_fps == 5.0
    with pytest.raises(ConfigError, match="not loopback"):
        load_config(None, {"APPLIANCE_HTTP__HOST": "192.168.1.20"})
    with pytest.raises(ConfigError, match="token_hash"):
        load_config(None, {"APPLIANCE_HTTP__TOKEN_HASH": "plain-text-token"})  # a hash, never the token
    stored = hash_token(TOKEN)
    exposed = load_config(None, {"APPLIANCE_HTTP__HOST": "0.0.0.0", "APPLIANCE_HTTP__TOKEN_HASH": stored})
    assert exposed.http.token_hash == stored


def test_with_a_certificate_the_live_view_speaks_only_tls(
    broker: Mosquitto, tmp_path: Path, certs: Path
) -> None:
    """The site's server certificate for `localhost` (deploy/pki.sh broker DIR localhost) on the live view:
    a client that trusts the site's CA verifies it, name included, and plain HTTP gets nothing."""
    live = start_live(
        broker,
        tmp_path,
        APPLIANCE_HTTP__CERT_FILE=str(certs / "broker.crt"),
        APPLIANCE_HTTP__KEY_FILE=str(certs / "broker.key"),
    )
    try:
        assert f"live view on https://127.0.0.1:{live.port}/" in live.log_text()
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        req = urllib.request.Request(f"https://localhost:{live.port}/api/status", headers=bearer())
        with urllib.request.urlopen(req, timeout=10, context=context) as answer:
            assert answer.status == 200 and json.loads(answer.read())["state"] == "online"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"{live.base}/api/session", timeout=10)  # plain HTTP: no answer
        assert live.process.poll() is None
    finally:
        stop_live(live)


def test_hash_token_reads_the_token_on_stdin_and_prints_the_config_line() -> None:
    made = appliance("http", "hash-token", stdin=TOKEN + "\n", timeout=60)
    assert made.returncode == 0, made.stderr
    key, _, value = made.stdout.strip().partition(" = ")
    assert key == "token_hash" and TOKEN not in made.stdout and verify_token(TOKEN, json.loads(value))
    short = appliance("http", "hash-token", stdin="guessable\n", timeout=60)
    assert short.returncode == 64 and "at least 12 characters" in short.stderr

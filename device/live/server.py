"""The live view's HTTP server (aiohttp), on its own thread and event loop, beside the daemon's threads.

Routes: `/` the page, `/static/*` its assets (all served by the device: it may be offline), `/ws` the
viewer's WebSocket (binary frame messages from the encoder, JSON events: quotes, stats, status),
`/api/status` and `/api/stats` (the JSON of the MQTT topics), `/api/snapshot.jpg`, `/api/session`,
`/api/login`, `/api/logout`, and the operator actions `/api/pause`, `/api/resume`, `/api/pace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from device.backoff import Backoff
from device.config import HttpConfig
from device.control import PaceCommand
from device.live.auth import Sessions, verify_token
from device.live.encoder import Encoder, EncoderCounters, FrameSlot, encode_jpeg, yield_to_the_frame_path
from device.supervise import supervised

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "live_session"
MAX_BODY = 16 * 1024  # every request body here is a few bytes of JSON
EVENTS_PER_VIEWER = 256  # queued JSON events per viewer; a viewer that stops reading loses the oldest
RECENT_QUOTES = 64  # the last quote of this many tracks, for a viewer that joins later
WRONG_TOKEN_PAUSE_S = 0.5
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Actions:
    """What the server needs from the daemon (app.py wires it): nothing else of the daemon is in reach."""

    status: Callable[[], dict[str, Any]]  # the MQTT status JSON
    command: Callable[[str, bytes], None]  # an operator command, handled as cmd/<name> from MQTT is
    pace: Callable[[], dict[str, Any]]  # the pace now


class _Viewer:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.frame: bytes | None = None
        self.events: deque[str] = deque(maxlen=EVENTS_PER_VIEWER)
        self.wake = asyncio.Event()
        self.dropped = 0  # frames replaced before this viewer was sent them


class LiveServer:
    def __init__(self, config: HttpConfig, actions: Actions, restart: Backoff | None = None) -> None:
        """`restart`: the waits before the server's thread starts again after a crash (1 s doubling to
        30 s by default)."""
        self.config = config
        self.actions = actions
        self.slot = FrameSlot()
        self.counters = EncoderCounters()
        self.sessions = Sessions()
        self.url = ""
        self.error: str | None = None  # why the server is not listening
        self._viewers: set[_Viewer] = set()
        self._encoder: Encoder | None = None
        self._stats: dict[str, Any] | None = None
        self._last_frame: bytes | None = None  # a viewer who joins sees it at once, paused device or not
        self._quotes: dict[Any, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._good_tokens: set[bytes] = set()
        self._verifying = asyncio.Lock()
        self._stopped: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._halt = threading.Event()
        run = supervised("http", self._run, self._halt, self._crashed, restart)
        self._thread = threading.Thread(target=run, name="http", daemon=True)

    # -- the daemon's side (other threads) ---------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self, timeout: float = 1.0) -> None:
        self._halt.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, stopped)
        self._thread.join(timeout)

    def quote(self, quote: dict[str, Any]) -> None:
        """A quote arrived at the device: to every viewer now, stamped so the page can tell the delay."""
        event = {"type": "quote", "quote": quote, "received_ms": round(time.time() * 1e3, 2)}
        self._call(self._on_quote, event)

    def stats(self, snapshot: dict[str, Any]) -> None:
        event = {"type": "stats", "stats": snapshot, "status": self._status()}
        self._call(self._on_stats, event)

    def figures(self) -> dict[str, Any]:
        """The live view's own figures, in the stats snapshot."""
        return {
            "listening": self.error is None and bool(self.url),
            "viewers": len(self._viewers),
            "encoder_starts": self.counters.starts,
            "frames_encoded": self.counters.encoded,
            "encode_ms": self.counters.encode_ms,
            "frames_dropped": sum(v.dropped for v in list(self._viewers)),
            "snapshots": self.counters.snapshots,
            "crashes": self.counters.crashes,
            "last_crash": self.counters.last_crash,
        }

    def _call(self, callback: Callable[[dict[str, Any]], None], event: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: closed between the check and the call, as the server stops.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, event)

    def _status(self) -> dict[str, Any]:
        return {"state": "online", **self.actions.status()}

    # -- the server's thread -----------------------------------------------------------------------
    def _crashed(self, why: str) -> None:
        """The server's thread raised (device/supervise.py logged it whole): off until it restarts."""
        self.counters.crashed(why)
        self.url, self.error = "", f"unexpected {why}"
        self._ready.set()  # start() must not wait out its timeout for a server that failed

    def _run(self) -> None:
        yield_to_the_frame_path()  # sending frames and answering the page can wait a moment; frames cannot
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._stopped = stopped = loop.create_future()
        try:
            self._serve(loop, stopped)
        finally:  # also when it raised: the supervisor starts a fresh loop after its backoff
            self._stop_encoder()
            loop.close()

    def _serve(self, loop: asyncio.AbstractEventLoop, stopped: asyncio.Future[None]) -> None:
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=self._tls())
            loop.run_until_complete(site.start())
        except (OSError, ssl.SSLError) as exc:
            # The live view is an accessory: the daemon keeps pricing objects without it.
            self.error = f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            log.error("live view off: %s; set [http] host/port to a free address", self.error)
            self._ready.set()
            loop.run_until_complete(runner.cleanup())
            return
        self.error = None  # listening (again, after a crash)
        scheme = "https" if self.config.cert_file else "http"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"{scheme}://{host}:{self.config.port}/"
        log.info("live view on %s", self.url)
        self._ready.set()
        loop.run_until_complete(stopped)
        loop.run_until_complete(self._close_viewers())
        loop.run_until_complete(runner.cleanup())

    def _tls(self) -> ssl.SSLContext | None:
        if self.config.cert_file is None or self.config.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.cert_file, self.config.key_file)
        return context

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.on_response_prepare.append(_headers)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC, follow_symlinks=False, show_index=False)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/stats", self._api_stats)
        app.router.add_get("/api/snapshot.jpg", self._snapshot)
        app.router.add_get("/api/session", self._session)
        app.router.add_post("/api/login", self._login)
        app.router.add_post("/api/logout", self._logout)
        for name in ("pause", "resume", "pace"):
            app.router.add_post(f"/api/{name}", self._action)
        return app

    # -- authentication ----------------------------------------------------------------------------
    async def _authenticated(self, request: web.Request) -> bool:
        """A session cookie, or `Authorization: Bearer <token>` (scripts, curl)."""
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and await self._check_token(token.strip())

    async def _check_token(self, token: str) -> bool:
        """scrypt, off the event loop (frames keep flowing), one at a time, and a pause after a wrong
        token: guessing costs the device at most a share of one core, and the guesser a lot of time. A
        token that passed is remembered by its SHA-256, so a script's every call does not pay scrypt."""
        stored = self.config.token_hash
        if stored is None or not token:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        if digest in self._good_tokens:
            return True
        async with self._verifying:
            ok = await asyncio.get_running_loop().run_in_executor(None, verify_token, token, stored)
            if not ok:
                log.warning("live view: a wrong token")
                await asyncio.sleep(WRONG_TOKEN_PAUSE_S)
                return False
        if len(self._good_tokens) < 16:  # one token is configured: anything more is not worth keeping
            self._good_tokens.add(digest)
        return True

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Viewing needs the token whenever one is set (it must be set off loopback); operator actions
        always need it, so without one they are refused."""
        path = request.path
        public = path in ("/", "/api/session", "/api/login") or path.startswith("/static/")
        if not public and self.config.token_hash is not None and not await self._authenticated(request):
            return _error(401, "log in with the device's live-view token")
        if request.method == "POST" and path not in ("/api/login", "/api/logout"):
            if self.config.token_hash is None:
                return _error(403, "operator actions need [http] token_hash set (docs/live-view.md)")
            # A cross-site form cannot send JSON without a CORS preflight, which this server never grants.
            if request.content_type != "application/json":
                return _error(415, "send the body as application/json")
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            return _error(403, "requests from another site's page are refused")
        return await handler(request)

    async def _session(self, request: web.Request) -> web.Response:
        needed = self.config.token_hash is not None
        return web.json_response(
            {
                "token_required": needed,
                "authenticated": needed and await self._authenticated(request),
                "actions": needed,
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        stored = self.config.token_hash
        if stored is None:
            return _error(400, "this device has no live-view token set: nothing to log in to")
        body = await _json_body(request)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _error(400, 'send {"token": "..."}')
        if not await self._check_token(token):
            return _error(401, "wrong token")
        response = web.json_response({"authenticated": True})
        response.set_cookie(
            COOKIE,
            self.sessions.create(),
            httponly=True,
            samesite="Strict",
            secure=self.config.cert_file is not None,
            path="/",
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = web.json_response({"authenticated": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- pages and API -----------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _api_status(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        return web.json_response(await loop.run_in_executor(None, self._status))

    async def _api_stats(self, request: web.Request) -> web.Response:
        if self._stats is None:
            return _error(503, "no stats yet: the first come one stats interval after start")
        return web.json_response(self._stats)

    async def _snapshot(self, request: web.Request) -> web.Response:
        latest = self.slot.latest
        if latest is None:
            return _error(503, "no frame processed yet (is the camera running and the device not paused?)")
        loop = asyncio.get_running_loop()
        jpeg = await loop.run_in_executor(None, encode_jpeg, latest[0], self.config.jpeg_quality)
        self.counters.snapshots += 1
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _action(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        payload = await request.read()
        if name == "pace":
            try:
                PaceCommand.model_validate_json(payload or b"{}")  # the same checks as cmd/pace
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "body"
                return _error(400, f"{where}: {first['msg']}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.actions.command, name, payload)
        log.info("live view: %s by %s", name, request.remote)
        return web.json_response({"pace": self.actions.pace()})

    # -- viewers -----------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        if len(self._viewers) >= self.config.max_viewers:
            raise web.HTTPServiceUnavailable(text=f"{self.config.max_viewers} viewers already watch")
        # No permessage-deflate: JPEGs do not compress, and zlib would spend the CPU the frames need.
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, compress=False)
        await ws.prepare(request)
        viewer = _Viewer(ws)
        hello = {
            "type": "hello",
            "stats": self._stats,
            "status": await asyncio.get_running_loop().run_in_executor(None, self._status),
            "quotes": list(self._quotes.values()),
            "fps": self.config.frame_fps,
        }
        viewer.events.append(json.dumps(hello))
        viewer.frame = self._last_frame
        self._viewers.add(viewer)
        if len(self._viewers) == 1:
            self._start_encoder()
        sender = asyncio.create_task(self._send(viewer))
        viewer.wake.set()
        try:
            async for message in ws:  # the page sends nothing; reading notices the close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self._viewers.discard(viewer)
            if not self._viewers:
                self._stop_encoder()
            sender.cancel()
        return ws

    async def _send(self, viewer: _Viewer) -> None:
        ws = viewer.ws
        try:
            while not ws.closed:
                await viewer.wake.wait()
                viewer.wake.clear()
                while viewer.events:
                    await ws.send_str(viewer.events.popleft())
                frame, viewer.frame = viewer.frame, None
                if frame is not None:
                    await ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):  # the viewer went away mid-send
            await ws.close()

    def _start_encoder(self) -> None:
        loop = asyncio.get_running_loop()

        def deliver(message: bytes) -> None:  # on the encoder's thread
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
                loop.call_soon_threadsafe(self._on_frame, message)

        self._encoder = Encoder(
            self.slot, self.config.frame_fps, self.config.jpeg_quality, self.counters, deliver
        )
        self._encoder.start()

    def _stop_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder.stop()
            self._encoder = None

    def _on_frame(self, message: bytes) -> None:
        self._last_frame = message
        for viewer in self._viewers:
            if viewer.frame is not None:
                viewer.dropped += 1  # still sending the last one: this viewer skips a frame
            viewer.frame = message
            viewer.wake.set()

    def _on_quote(self, event: dict[str, Any]) -> None:
        track = event["quote"].get("track_id")
        self._quotes.pop(track, None)
        self._quotes[track] = event
        while len(self._quotes) > RECENT_QUOTES:
            self._quotes.pop(next(iter(self._quotes)))
        self._broadcast(event)

    def _on_stats(self, event: dict[str, Any]) -> None:
        self._stats = event["stats"]
        self._broadcast(event)

    def _broadcast(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        for viewer in self._viewers:
            viewer.events.append(text)
            viewer.wake.set()

    async def _close_viewers(self) -> None:
        viewers = list(self._viewers)
        if viewers:
            await asyncio.wait(
                [asyncio.create_task(v.ws.close(code=1001, message=b"device stopping")) for v in viewers],
                timeout=0.5,
            )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise web.HTTPBadRequest(text="the body is not JSON") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """The page loads only its own scripts and styles, in no frame, and nothing is cached but assets."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"

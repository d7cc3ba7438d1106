"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol: what the live-view
benchmark and tests open the page with. Never a browser download: the one on the machine, or an error
that says how to install it.

A small synchronous client on its own event loop: navigate, evaluate JavaScript, wait for a condition
with a deadline, set the screen size, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from device.errors import EX_UNAVAILABLE, ApplianceError

# As root Chromium needs --no-sandbox; the rest keep it from phoning home or doing first-run work.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_S = 30.0


class BrowserError(ApplianceError):
    """Chromium is missing, did not start, or a page did not come to the state asked for in time."""

    exit_code = EX_UNAVAILABLE


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no Chromium on this machine: `apt-get install chromium` (make system-deps does)")


class Chromium:
    def __init__(self, width: int = 1280, height: int = 800) -> None:
        # Chromium's helper processes can still be writing the profile as the main one exits: the
        # whole process group is ended below, and a file that appears during the cleanup is left.
        self._profile = tempfile.TemporaryDirectory(prefix="appliance-chromium-", ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [
                chromium_binary(),
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its singleton socket folder goes in TMPDIR and is left there when the browser is ended
            # by a signal: inside the profile, it goes with the profile.
            env={**os.environ, "TMPDIR": self._profile.name},
            start_new_session=True,  # its own process group: its renderers and helpers end with it
        )
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            self._loop.run_until_complete(self._connect(self._page_url()))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _page_url(self) -> str:
        """The first page's DevTools WebSocket, once Chromium has written its port (it picks a free one)."""
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"Chromium exited with {self._process.returncode} at start")
            lines = port_file.read_text().split() if port_file.exists() else []
            if lines:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{lines[0]}/json/list", timeout=5
                    ) as answer:
                        pages = [t for t in json.load(answer) if t.get("type") == "page"]
                except OSError:
                    pages = []
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)  # Chromium offers nothing to wait on before its port is open
        raise BrowserError(f"Chromium opened no DevTools page within {START_S:.0f} s")

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=64 * 2**20)

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """One DevTools command and its result."""
        return self._loop.run_until_complete(asyncio.wait_for(self._call(method, params or {}), timeout))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await self._ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"DevTools connection ended during {method}")
            answer = json.loads(message.data)
            if answer.get("id") == ident:  # anything else is an event nobody asked for
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(
                f"JavaScript failed: {result['exceptionDetails'].get('text')} in {expression!r}"
            )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """The expression's value once it is truthy; BrowserError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)  # the page changes on its own; DevTools has no event for "this is true"

    def open(self, url: str, timeout: float = 30.0) -> None:
        self.call("Page.navigate", {"url": url})
        page = json.dumps(url.split("#", maxsplit=1)[0])
        self.wait_for(
            f"location.href.startsWith({page}) && document.readyState === 'complete'",
            timeout,
            f"{url} to load",
        )

    def screen(self, width: int, height: int, mobile: bool = False) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self) -> bytes:
        """The page as PNG."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        async def disconnect() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._session is not None:
                await self._session.close()

        if not self._loop.is_closed():
            try:  # a browser that already went away must not keep the process below from being ended
                self._loop.run_until_complete(asyncio.wait_for(disconnect(), 5))
            except (OSError, aiohttp.ClientError, TimeoutError):
                pass
            finally:
                self._loop.close()
        self._end(signal.SIGTERM)
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._end(signal.SIGKILL)
            self._process.wait(5)
        self._end(signal.SIGKILL)  # helpers that outlived the main process
        self._profile.cleanup()

    def _end(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

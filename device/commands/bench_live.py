"""The live view's share of `appliance bench pipeline`: what a viewer costs the frame path, and how
long a quote takes from arriving at the device to its price tag in the page's DOM.

Viewers are WebSocket clients in a process of their own (device/live/viewers.py): the device pays for
encoding and sending, not for a phone's decoding. The tag delay is measured in a real headless
Chromium (Debian's package) on loopback; without one the figure is missing and says why.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from device.camera.source import Frame
from device.config import HttpConfig
from device.errors import ApplianceError
from device.live.browser import Chromium
from device.live.server import Actions, LiveServer
from device.vision.tracker import Track
from rigs.broker import free_port
from rigs.report import check

RATIO_GOAL = 0.95  # processed fps with viewers / without: the frame path's budget for the live view
TAG_GOAL_MS = 100.0  # quote arrival -> its tag in the page's DOM, p50, on loopback
QUOTES = 40  # tags timed in the page; p50 over these
FEED_FPS = 15.0  # the demo camera's rate, for the page's frames while quotes are timed


class LiveRig:
    """A live server on a free loopback port, with no token (loopback only), and a viewers process."""

    def __init__(self) -> None:
        self.server = LiveServer(HttpConfig(port=free_port()), Actions(dict, _no_command, dict))
        self.server.start()
        if self.server.error is not None or not self.server.url:
            raise ApplianceError(f"bench: the live server did not start: {self.server.error}")
        self._viewers = subprocess.Popen(
            # Nice 19: they stand in for phones, whose work is not the device's; here they share its cores.
            [
                "nice",
                "-n",
                "19",
                sys.executable,
                "-m",
                "device.live.viewers",
                self.server.url.replace("http", "ws", 1) + "ws",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def url(self) -> str:
        return self.server.url

    def watch(self, viewers: int) -> None:
        """Hold this many viewers; returns once each has had a frame, or all have gone from the server."""
        stdin, stdout = self._viewers.stdin, self._viewers.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{viewers}\n")
        stdin.flush()
        answer = stdout.readline().strip()
        if answer != f"ok {viewers}":
            raise ApplianceError(f"bench: the viewers process answered {answer!r} for {viewers} viewers")
        deadline = time.monotonic() + 10
        while self.server.figures()["viewers"] != viewers:  # the server sees a close a moment later
            if time.monotonic() > deadline:
                raise ApplianceError(f"bench: the live server never counted {viewers} viewers")
            time.sleep(0.005)

    def close(self) -> None:
        if self._viewers.stdin is not None:
            self._viewers.stdin.close()
        try:
            self._viewers.wait(5)
        except subprocess.TimeoutExpired:
            self._viewers.kill()
            self._viewers.wait(5)
        self.server.stop()


def live_checks(live: dict[str, Any]) -> list[dict[str, Any]]:
    """A viewer must not slow the frame path; a quote must reach the page in the time a person looks."""
    checks = [
        check(
            f"processed fps with {name} watching the live view / with none, median of rounds",
            live[f"{key}_over_none"]["median"],
            ">=",
            RATIO_GOAL,
        )
        for key, name in (("one", "one viewer"), ("ten", "ten viewers"))
    ]
    tag = live["quote_to_tag_ms"]
    if "p50" in tag:  # missing only where no Chromium runs: the report says why
        checks.append(
            check("quote arrival -> price tag in the page's DOM, p50 ms", tag["p50"], "<=", TAG_GOAL_MS)
        )
    return checks


def _no_command(name: str, payload: bytes) -> None: ...


def quote_to_tag_ms(rig: LiveRig, pairs: list[tuple[Frame, list[Track]]]) -> dict[str, Any]:
    """Quotes for the boxes on the page, handed to the server as the daemon hands them; each one's delay
    from then to its tag in the DOM, by the page's own clock (the same machine: the same clock)."""
    if not any(tracks for _, tracks in pairs):
        return {"error": "no tracks on the demo frames: nothing to put a price tag on"}
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(rig, pairs, stop), daemon=True)
    feeder.start()
    try:
        with Chromium() as browser:
            browser.open(rig.url)
            for seq in range(1, QUOTES + 1):
                track = browser.wait_for(
                    "(() => { const b = document.querySelector('.box:not(.gone)');"
                    " return b ? Number(b.dataset.track) + 1 : 0; })()",
                    30,
                    "a box on the page",
                )
                rig.server.quote(_quote(seq, track - 1))
                browser.wait_for(f"live.tagged.some(t => t.seq === {seq})", 10, f"the tag of quote {seq}")
            tagged = browser.evaluate("live.tagged")
    except ApplianceError as exc:  # no Chromium here, or the page did not get there: say so
        return {"error": str(exc)}
    finally:
        stop.set()
        feeder.join(2)
    delays = [t["tagged_ms"] - t["received_ms"] for t in tagged if 1 <= t["seq"] <= QUOTES]
    return {
        "p50": round(statistics.median(delays), 2),
        "p90": round(float(np.percentile(delays, 90)), 2),
        "max": round(max(delays), 2),
        "samples": len(delays),
    }


def _feed(rig: LiveRig, pairs: list[tuple[Frame, list[Track]]], stop: threading.Event) -> None:
    """The frame thread's part, at the camera's rate, round and round the demo frames."""
    index = 0
    while not stop.wait(1.0 / FEED_FPS):
        rig.server.slot.offer(*pairs[index % len(pairs)])
        index += 1


def _quote(seq: int, track_id: int) -> dict[str, Any]:
    """A quote as the pricing service sends it (pricing/quote.py), with prices the page must show."""
    return {
        "status": "ok",
        "seq": seq,
        "track_id": track_id,
        "n": 20,
        "avg_sold_price": 1000.0 + seq,
        "median_sold_price": 950.0,
        "sell_through": 0.4,
        "currency": "JPY",
        "neighbours": [],
        "latency_ms": 1.0,
    }

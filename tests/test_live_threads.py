"""The live view's threads are supervised (issue 16, item 8): an exception nobody expected in the
encoder or the HTTP server thread is logged with its traceback, counted in the live view's figures (the
stats), and the thread starts again after a backoff, instead of the frames stopping for good while the
page still looks connected."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from device.backoff import Backoff
from device.camera.source import Frame
from device.config import HttpConfig
from device.live.encoder import Encoder, EncoderCounters, FrameSlot
from device.live.server import Actions, LiveServer
from rigs.broker import free_port

from .mqtt_helpers import wait_until


def test_an_encoder_that_raises_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    slot, counters = FrameSlot(), EncoderCounters()
    delivered: list[bytes] = []
    slot.offer(Frame(np.zeros((48, 64, 3), np.uint8), time.time(), 1), [])

    def deliver(message: bytes) -> None:  # the server's hand-off, failing once
        if not delivered:
            delivered.append(b"")
            raise RuntimeError("the event loop went away")
        delivered.append(message)

    encoder = Encoder(slot, fps=20.0, quality=80, counters=counters, deliver=deliver)
    with caplog.at_level(logging.ERROR):
        encoder.start()
        try:
            assert wait_until(lambda: len(delivered) >= 2, 10), "the encoder did not come back"
        finally:
            encoder.stop()
            encoder.join(2)
    assert counters.crashes == 1 and counters.last_crash == "RuntimeError: the event loop went away"
    failed = [r for r in caplog.records if "live-encoder thread failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None  # with its traceback
    assert delivered[1].startswith(b"") and len(delivered[1]) > 0  # a real frame after the restart


class FailingOnce(LiveServer):
    """A server whose first start meets a bug (the fault is injected through the server's own method,
    which its thread calls; nothing else is replaced)."""

    failed = False

    def _app(self) -> web.Application:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in building the app")
        return super()._app()


def test_a_server_thread_that_raises_says_so_and_listens_again(caplog: pytest.LogCaptureFixture) -> None:
    def status() -> dict[str, Any]:
        return {"state": "online"}

    actions = Actions(status, lambda _name, _payload: None, dict)
    # A short wait before the restart: the port chosen here stays free for that long only by luck.
    server = FailingOnce(HttpConfig(port=free_port()), actions, restart=Backoff(0.05, 1.0))
    with caplog.at_level(logging.ERROR):
        server.start()
        try:
            assert server.error == "unexpected RuntimeError: a bug in building the app"
            assert server.figures()["listening"] is False and server.figures()["crashes"] == 1
            assert wait_until(lambda: server.url, 10), "the server did not come back"
            with urllib.request.urlopen(server.url, timeout=5) as page:
                assert page.status == 200
            assert server.error is None and server.figures()["listening"] is True
        finally:
            server.stop()
    failed = [r for r in caplog.records if "http thread failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert threading.active_count() >= 1

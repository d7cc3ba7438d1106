"""The camera thread and the latest-frame hand-off.

A camera produces frames at its own pace. If the pipeline is slower, queued frames would only make
every result later, so the grabber keeps exactly one slot: a new frame replaces an unread one, and
the replaced frame is counted as skipped. A source that fails is closed and reopened with backoff;
its state is in the status and stats. An unexpected exception restarts the thread (device/supervise.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from device.backoff import Backoff
from device.camera.source import Frame, FrameSource
from device.errors import CameraError, EndOfStreamError
from device.supervise import supervised

log = logging.getLogger(__name__)


@dataclass
class GrabberStats:
    state: str = "starting"  # starting, running, reopening, ended, stopped
    frames: int = 0
    skipped: int = 0
    reopens: int = 0
    crashes: int = 0  # the camera thread failed unexpectedly and was restarted (device/supervise.py)
    last_error: str = ""


class FrameGrabber:
    def __init__(
        self, source: FrameSource, backoff: Backoff, on_state: Callable[[str], None] | None = None
    ) -> None:
        self.source = source
        self.backoff = backoff
        self.stats = GrabberStats()
        self._on_state = on_state
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        run = supervised("camera", self._run, self._stop, self._crashed, backoff)
        self._thread = threading.Thread(target=run, name="camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def ended(self) -> bool:
        return self.stats.state == "ended"

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout` s; None if none came."""
        with self._cond:
            if self._slot is None and not self._stop.is_set() and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            return frame

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self._slot is not None:
                self.stats.skipped += 1
            self._slot = frame
            self.stats.frames += 1
            self._cond.notify()

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.stats.state and self._on_state is not None:
            self._on_state(state)
        self.stats.state = state
        if error:
            self.stats.last_error = error

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._open():
                continue
            self._pump()
            self.source.close()
        if not self.ended:
            self._set_state("stopped")
        with self._cond:
            self._cond.notify_all()

    def _crashed(self, reason: str) -> None:
        """Not a CameraError: a bug or a driver's surprise. The source is closed and, after the
        supervisor's backoff, opened again; the state says why meanwhile."""
        self.stats.crashes += 1
        self._set_state("reopening", f"unexpected {reason}")
        with contextlib.suppress(Exception):
            self.source.close()

    def _open(self) -> bool:
        try:
            self.source.open()
        except CameraError as exc:
            self._retry_later(str(exc))
            return False
        if self.stats.state != "starting":
            self.stats.reopens += 1
            log.info("camera %s reopened", self.source.name)
        self._set_state("running")
        self.backoff.reset()
        return True

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except EndOfStreamError as exc:
                log.info("%s", exc)
                self._set_state("ended")
                self._stop.set()
                return
            except CameraError as exc:
                self._retry_later(str(exc))
                return
            self._put(frame)

    def _retry_later(self, error: str) -> None:
        delay = self.backoff.next_delay()
        # One line per backoff step, not per failed frame.
        log.warning("camera %s: %s; retrying in %.1f s", self.source.name, error, delay)
        self._set_state("reopening", error)
        self.source.close()
        # Waiting on the stop event, not sleeping, so SIGTERM is not held up by a long backoff.
        self._stop.wait(delay)

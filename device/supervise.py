"""Every thread the daemon owns is supervised: an exception nobody expected is logged with its
traceback, counted where the stats show it, and the part starts again after a backoff, instead of its
thread ending quietly while its state still reads "running" (issue 16: the camera thread did that)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from device.backoff import Backoff

log = logging.getLogger(__name__)


def supervised(
    name: str,
    body: Callable[[], None],
    stop: threading.Event,
    on_crash: Callable[[str], None],
    backoff: Backoff | None = None,
) -> Callable[[], None]:
    """A thread target that runs `body` until it returns or `stop` is set; if it raises, `on_crash` gets
    a one-line reason (for the stats), and `body` runs again after a backoff step (1-30 s)."""
    steps = backoff or Backoff(1.0, 30.0)

    def run() -> None:
        while not stop.is_set():
            try:
                body()
                return
            except Exception as exc:  # the point of supervision: anything at all, logged whole
                log.exception("%s thread failed; restarting it", name)
                on_crash(f"{type(exc).__name__}: {exc}")
                stop.wait(steps.next_delay())

    return run

"""The live frames: the frame thread leaves a reference in a slot, an encoder thread makes JPEGs of it.

The frame thread's whole cost is one attribute store per frame (`FrameSlot.offer`): no copy, no
encoding, no lock. The encoder thread exists only while someone watches, wakes at most `fps` times a
second, encodes the newest frame it finds (from the lores stream when the camera has one: fewer pixels
to compress) and hands the bytes on. A frame that is replaced before the encoder looks at it is never
encoded: frames are dropped, never queued.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from device.camera.source import Frame
from device.supervise import supervised
from device.vision.tracker import Track

log = logging.getLogger(__name__)

LIVE_NICE = 10  # the live view's threads' nice value: below the frame path, above nothing else
HEADER = struct.Struct("<I")  # a frame message: header length, the header as JSON, then the JPEG


@dataclass
class EncoderCounters:
    starts: int = 0  # times the encoder thread was started (0 while nobody has watched)
    encoded: int = 0  # frames encoded for viewers
    encode_ms: float = 0.0  # the last frame's encoding time
    snapshots: int = 0  # /api/snapshot.jpg answers (encoded on the request's own worker)
    crashes: int = 0  # unexpected exceptions in the encoder or the server thread, each restarted
    last_crash: str = ""

    def crashed(self, why: str) -> None:
        self.crashes += 1
        self.last_crash = why


class FrameSlot:
    """The newest processed frame and its tracks, as the frame thread left them."""

    def __init__(self) -> None:
        self.latest: tuple[Frame, list[Track]] | None = None

    def offer(self, frame: Frame, tracks: list[Track]) -> None:
        """Called by the frame thread after each frame. A single store: readers see the old tuple or the
        new one, never half of either (the frames are never written to after they are made)."""
        self.latest = (frame, tracks)


def encode_jpeg(frame: Frame, quality: int) -> bytes:
    image = frame.lores if frame.lores is not None else frame.image
    ok, jpeg = cv2.imencode(
        ".jpg",
        cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, quality],
    )
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return bytes(jpeg)


def frame_message(frame: Frame, tracks: list[Track], quality: int) -> bytes:
    """One binary WebSocket message: the frame's JPEG with the tracks that were on it, so that the boxes
    the page draws always belong to the picture under them."""
    jpeg = encode_jpeg(frame, quality)
    w, h = frame.width, frame.height
    header = {
        "index": frame.index,
        "captured_ms": round(frame.captured * 1e3, 1),
        # The main stream's size: the lores picture may have another aspect, the page shows this one.
        "width": w,
        "height": h,
        "tracks": [
            {
                "id": t.track_id,
                "label": t.label,
                "score": round(t.score, 3),
                "box": [
                    round(t.box.x1 / w, 4),
                    round(t.box.y1 / h, 4),
                    round(t.box.x2 / w, 4),
                    round(t.box.y2 / h, 4),
                ],
            }
            for t in tracks
        ],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(encoded)) + encoded + jpeg


def yield_to_the_frame_path() -> None:
    """Nice 10 for the calling thread (Linux nice is per thread): when the cores are busy, the live view
    waits and the camera, detector and embedder do not. Where it cannot be set, it is not."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LIVE_NICE)


class Encoder:
    """One run of the encoder thread: started when the first viewer connects, stopped with the last."""

    def __init__(
        self,
        slot: FrameSlot,
        fps: float,
        quality: int,
        counters: EncoderCounters,
        deliver: Callable[[bytes], None],
    ) -> None:
        self.slot = slot
        self.period = 1.0 / fps
        self.quality = quality
        self.counters = counters
        self.deliver = deliver
        self._stop = threading.Event()
        run = supervised("live-encoder", self._run, self._stop, self.counters.crashed)
        self._thread = threading.Thread(target=run, name="live-encoder", daemon=True)

    def start(self) -> None:
        self.counters.starts += 1
        self._thread.start()

    def stop(self) -> None:
        """Returns at once; the thread ends within one period (it may be in the middle of an encode)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        yield_to_the_frame_path()
        last: Frame | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            latest = self.slot.latest
            if latest is not None and latest[0] is not last:
                last = latest[0]
                try:
                    message = frame_message(latest[0], latest[1], self.quality)
                except (ValueError, cv2.error) as exc:  # one bad frame must not end the live view
                    log.warning("live view: frame %d not encoded: %s", latest[0].index, exc)
                else:
                    self.counters.encoded += 1
                    self.counters.encode_ms = round((time.monotonic() - began) * 1e3, 2)
                    self.deliver(message)
            # The rate cap: the next look is one period after this one began, whatever the encode took.
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

"""USB cameras (V4L2), video files and RTSP streams through OpenCV's VideoCapture."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device.camera.pacing import Pacer
from device.camera.source import Frame
from device.clock import Clock, SystemClock
from device.errors import CameraError, EndOfStreamError

log = logging.getLogger(__name__)


class OpenCVSource:
    """`kind` is "v4l2", "file" or "rtsp". Files play at their own frame rate, like a camera would
    deliver them, so a slow pipeline skips frames here exactly as it would live."""

    def __init__(
        self,
        kind: str,
        target: str,
        *,
        width: int = 640,
        height: int = 480,
        loop: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.kind, self.target = kind, target
        self.name = f"{kind}:{target}" if kind != "rtsp" else _redact(target)
        self.width, self.height = width, height
        self.loop = loop
        self.clock = clock or SystemClock()
        self._capture: cv2.VideoCapture | None = None
        self._index = 0
        self._pacer = Pacer(self.clock)

    def open(self) -> None:
        if self.kind == "file" and not Path(self.target).is_file():
            raise CameraError(f"video file {self.target} does not exist")
        capture = self._new_capture()
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"{self.name} cannot be opened: {self._hint()}")
        if self.kind == "v4l2":
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        fps = capture.get(cv2.CAP_PROP_FPS) if self.kind == "file" else 0.0
        # Sanity bound: some containers report 0 or 1000 fps; then play as fast as read.
        self._pacer.restart(1.0 / fps if 1.0 <= fps <= 240.0 else 0.0)
        self._capture = capture

    def _new_capture(self) -> cv2.VideoCapture:
        if self.kind == "v4l2":
            return cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        if self.kind == "rtsp":
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
        return cv2.VideoCapture(self.target)

    def _hint(self) -> str:
        if self.kind == "v4l2":
            return (
                "is the camera plugged in, and is the user in the 'video' group? (`v4l2-ctl --list-devices`)"
            )
        if self.kind == "rtsp":
            return "check the URL, the credentials and that the camera is reachable"
        return "the file is not a video OpenCV can decode"

    def read(self) -> Frame:
        if self._capture is None:
            raise CameraError(f"{self.name} is not open")
        ok, bgr = self._capture.read()
        if not ok and self.kind == "file" and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._capture.read()
        if not ok:
            if self.kind == "file":
                raise EndOfStreamError(f"{self.name}: end of file after {self._index} frames")
            raise CameraError(f"{self.name} stopped delivering frames")
        self._pacer.wait()
        rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        frame = Frame(image=rgb, captured=self.clock.time(), index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _redact(url: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/...: credentials never reach the logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"

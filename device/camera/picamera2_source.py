"""The Pi camera through picamera2: a main stream for crops and a lores stream at the detector's size,
both from the same sensor readout (capture_arrays), so boxes found on lores map exactly onto main.

picamera2 comes from apt (python3-picamera2) on Raspberry Pi OS, so the device venv is created with
--system-site-packages. The camera class is injectable: tests pass FakePicamera2, which follows the
real library's API and error behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from device.camera.source import Frame, Image
from device.clock import Clock, SystemClock
from device.errors import CameraError

log = logging.getLogger(__name__)

NO_CAMERA = (
    "no Pi camera found{detail}. Check the ribbon cable and `rpicam-hello --list-cameras`, or choose "
    'another source: camera.source = "v4l2:/dev/video0" (USB camera), "file:clip.mp4" or '
    '"images:DIR?fps=15"'
)


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # noqa: PLC0415 - only on a Pi, from apt
    except ImportError:
        raise CameraError(NO_CAMERA.format(detail=" (python3-picamera2 is not installed)")) from None
    return Picamera2


class Picamera2Source:
    def __init__(
        self,
        camera_num: int = 0,
        *,
        width: int = 640,
        height: int = 480,
        lores_size: tuple[int, int] | None = None,
        camera_class: Any = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = f"picamera2:{camera_num}"
        self.camera_num = camera_num
        self.size = (width, height)
        # libcamera wants even lores dimensions for YUV420.
        self.lores_size = None if lores_size is None else (lores_size[0] & ~1, lores_size[1] & ~1)
        self._camera_class = camera_class
        self.clock = clock or SystemClock()
        self._camera: Any = None
        self._index = 0

    def open(self) -> None:
        camera_class = self._camera_class or _import_picamera2()
        if len(camera_class.global_camera_info()) <= self.camera_num:
            raise CameraError(NO_CAMERA.format(detail=f" (camera {self.camera_num})"))
        try:
            camera = camera_class(self.camera_num)
            streams: dict[str, Any] = {"main": {"size": self.size, "format": "RGB888"}}
            if self.lores_size is not None:
                # YUV420 because the Pi 4's ISP (VC4) accepts no other lores format; the Pi 5 accepts it too.
                streams["lores"] = {"size": self.lores_size, "format": "YUV420"}
            camera.configure(camera.create_video_configuration(**streams, buffer_count=4))
            camera.start()
        except (IndexError, RuntimeError, OSError) as exc:
            raise CameraError(NO_CAMERA.format(detail=f" ({type(exc).__name__}: {exc})")) from None
        self._camera = camera

    def read(self) -> Frame:
        if self._camera is None:
            raise CameraError(f"{self.name} is not open")
        names = ["main", "lores"] if self.lores_size is not None else ["main"]
        try:
            arrays, _metadata = self._camera.capture_arrays(names)
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"{self.name} stopped delivering frames: {exc}") from None
        # picamera2's "RGB888" is B, G, R in memory (libcamera's naming); the pipeline works in RGB.
        main = np.ascontiguousarray(arrays[0][:, :, 2::-1])
        lores = yuv420_to_rgb(arrays[1], *self.lores_size) if self.lores_size is not None else None
        frame = Frame(image=main, captured=self.clock.time(), index=self._index, lores=lores)
        self._index += 1
        return frame

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
                camera.close()
            except (RuntimeError, OSError) as exc:
                log.warning("%s did not close cleanly: %s", self.name, exc)


def yuv420_to_rgb(yuv: Image, width: int, height: int) -> Image:
    """An I420 buffer (height * 3/2 rows of `stride` bytes, stride >= width) to RGB (height, width, 3).

    picamera2 returns the planes with the hardware's row stride; with U and V at half that stride,
    the whole buffer converts as one I420 image `stride` wide, and the padding columns are cut after.
    """
    if yuv.ndim != 2 or yuv.shape[0] != height * 3 // 2 or yuv.shape[1] < width:
        raise CameraError(f"lores buffer {yuv.shape} is not YUV420 for {width}x{height}")
    rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    return np.ascontiguousarray(rgb[:, :width])

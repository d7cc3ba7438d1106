"""A stand-in for picamera2.Picamera2 on machines without a Pi camera.

It implements the subset of the real API that Picamera2Source uses, with the real library's shapes and
failure modes: `RGB888` main arrays in B, G, R order, YUV420 lores arrays of (h * 3/2, stride), and
IndexError("list index out of range") from the constructor when the camera does not exist.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from device.camera.source import Image

STRIDE_ALIGN = 64  # the Pi ISP pads rows to 64 bytes


class FakePicamera2:
    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708", "Num": 0, "Location": 2}]
    scene: ClassVar[Image | None] = None  # RGB image every frame shows; a gradient when None
    fail_after: ClassVar[int | None] = None  # capture_arrays raises after this many frames
    vc4: ClassVar[bool] = True  # a Pi 4: lores must be YUV420

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_info = self.global_camera_info()[camera_num]  # IndexError, like the real one
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.frames = 0

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        return list(cls.cameras)

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        buffer_count: int = 6,
        **_: Any,
    ) -> dict[str, Any]:
        return {
            "main": dict(main or {"size": (1280, 720), "format": "XBGR8888"}),
            "lores": dict(lores) if lores else None,
            "buffer_count": buffer_count,
        }

    def configure(self, config: dict[str, Any]) -> None:
        lores = config.get("lores")
        if lores is not None and self.vc4 and lores.get("format") != "YUV420":
            raise RuntimeError("lores stream must be YUV420 on this platform")
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_arrays(self, names: list[str] | None = None) -> tuple[list[Image], dict[str, Any]]:
        if not self.started or self.config is None:
            raise RuntimeError("Camera is not running")
        if self.fail_after is not None and self.frames >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        self.frames += 1
        rgb = self._scene(*self.config["main"]["size"])
        arrays = [self._stream(name, rgb) for name in (names or ["main"])]
        return arrays, {"SensorTimestamp": self.frames * 33_333_333, "FrameDuration": 33333}

    def _stream(self, name: str, rgb: Image) -> Image:
        if name == "main":
            return np.ascontiguousarray(rgb[:, :, ::-1])  # RGB888 is B, G, R in memory
        width, height = self.config["lores"]["size"] if self.config and self.config["lores"] else (0, 0)
        small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        yuv = np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)  # (h * 3/2, w)
        stride = -(-width // STRIDE_ALIGN) * STRIDE_ALIGN
        return padded_i420(yuv, width, height, stride)

    def _scene(self, width: int, height: int) -> Image:
        if self.scene is not None:
            return np.asarray(cv2.resize(self.scene, (width, height)), dtype=np.uint8)
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        return np.repeat(np.repeat(ramp[np.newaxis, :, np.newaxis], height, 0), 3, 2)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def padded_i420(yuv: Image, width: int, height: int, stride: int) -> Image:
    """Lay out an unpadded I420 buffer with rows of `stride` bytes, the way the ISP delivers it."""
    y = yuv[:height]
    chroma = yuv[height:].reshape(2, height // 2, width // 2)
    out = np.zeros((height * 3 // 2, stride), dtype=np.uint8)
    out[:height, :width] = y
    planes = np.zeros((2, height // 2, stride // 2), dtype=np.uint8)
    planes[:, :, : width // 2] = chroma
    out[height:] = planes.reshape(height // 2, stride)
    return out

"""A moving sequence made from still photos: the bundled demo source, and a repeatable test input.

Each photo is shown for `seconds`, slowly zooming in and drifting sideways, so that objects move and
grow from frame to frame the way they do under a hand-held or panning camera: the tracker has real work,
and boxes change enough to trigger re-embedding. The motion is a pure function of the frame number, so
a run is reproducible.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from device.camera.pacing import Pacer
from device.camera.source import Frame, Image
from device.clock import Clock, SystemClock
from device.errors import CameraError, EndOfStreamError, InputError
from device.image_header import DEFAULT_MAX_PIXELS
from device.images import read_image

log = logging.getLogger(__name__)

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# Zoom from 1.0 to 1 + ZOOM over one photo; drift by DRIFT of the frame width. Gentle enough that a box
# overlaps its previous position by far more than the tracker's IoU gate at 15 fps.
ZOOM = 0.25
DRIFT = 0.12
BACKGROUND = 96  # mid grey around the photo, like an empty table top
# Bad files named in the log per open; the rest are counted in one line. A camera reopens the folder
# after every error, so a file is named once per process, not once per reopen.
NAMED_PER_OPEN = 3


class ImageFolderSource:
    def __init__(
        self,
        directory: Path,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        seconds: float = 4.0,
        loop: bool = True,
        clock: Clock | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.name = f"images:{directory}"
        self.directory = directory
        self.width, self.height = width, height
        self.fps = fps
        # At fps=0 (as fast as the consumer reads) the motion still assumes 15 frames per second.
        self.frames_per_photo = max(2, round(seconds * (fps or 15.0)))
        self.loop = loop
        self.clock = clock or SystemClock()
        self.max_pixels = max_pixels
        self.refused = 0  # files skipped at the last open: not images, corrupt, or over max_pixels
        self._warned: set[Path] = set()
        self._photos: list[Image] = []
        self._index = 0
        self._pacer = Pacer(self.clock)

    def open(self) -> None:
        paths = sorted(p for p in self._list() if p.suffix.lower() in SUFFIXES)
        photos, problems = [], []
        for path in paths:
            try:
                photos.append(read_image(path, self.max_pixels))
            except InputError as exc:
                # A bad file (a stray download, a decompression bomb) is not worth stopping the camera.
                problems.append((path, str(exc)))
        self.refused = len(problems)
        self._warn([(path, text) for path, text in problems if path not in self._warned])
        if not photos:
            raise CameraError(
                f"image folder {self.directory} holds no readable photos ({', '.join(sorted(SUFFIXES))}); "
                f"{self.refused} file(s) refused"
            )
        self._photos = photos
        self._pacer.restart(1.0 / self.fps if self.fps > 0 else 0.0)

    def _warn(self, new: list[tuple[Path, str]]) -> None:
        for _, text in new[:NAMED_PER_OPEN]:
            log.warning("%s: skipped", text)
        if len(new) > NAMED_PER_OPEN:
            log.warning(
                "image folder %s: %d file(s) skipped as unreadable or too large, %d more not named here",
                self.directory,
                self.refused,
                len(new) - NAMED_PER_OPEN,
            )
        self._warned.update(path for path, _ in new)

    def _list(self) -> list[Path]:
        try:
            return list(self.directory.iterdir())
        except OSError as exc:
            raise CameraError(f"image folder {self.directory} cannot be read: {exc.strerror}") from None

    def read(self) -> Frame:
        if not self._photos:
            raise CameraError(f"{self.name} is not open")
        total = self.frames_per_photo * len(self._photos)
        if not self.loop and self._index >= total:
            raise EndOfStreamError(f"{self.name}: all {len(self._photos)} photos shown")
        self._pacer.wait()
        photo_number, step = divmod(self._index % total, self.frames_per_photo)
        image = self.render(self._photos[photo_number], step / (self.frames_per_photo - 1))
        frame = Frame(image=image, captured=self.clock.time(), index=self._index)
        self._index += 1
        return frame

    def render(self, photo: Image, progress: float) -> Image:
        """The photo fitted into the frame, zoomed by (1 + ZOOM * progress) and drifted sideways."""
        ph, pw = photo.shape[:2]
        fit = 0.8 * min(self.width / pw, self.height / ph)
        scale = fit * (1.0 + ZOOM * progress)
        # Ease in and out so the motion starts and ends gently, as a hand would.
        drift = DRIFT * self.width * (0.5 - 0.5 * math.cos(math.pi * progress)) - DRIFT * self.width / 2
        cx, cy = self.width / 2 + drift, self.height / 2
        matrix = np.array([[scale, 0.0, cx - scale * pw / 2], [0.0, scale, cy - scale * ph / 2]])
        warped = cv2.warpAffine(
            photo,
            matrix,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(BACKGROUND, BACKGROUND, BACKGROUND),
        )
        return np.asarray(warped, dtype=np.uint8)

    def close(self) -> None:
        self._photos = []

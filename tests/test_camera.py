"""Frame sources and the latest-frame hand-off: image folder, OpenCV video file, picamera2 (fake)."""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.backoff import Backoff
from device.camera.factory import make_source
from device.camera.fake_picamera2 import FakePicamera2, padded_i420
from device.camera.grabber import FrameGrabber
from device.camera.image_folder import ImageFolderSource
from device.camera.opencv_source import OpenCVSource
from device.camera.picamera2_source import Picamera2Source, yuv420_to_rgb
from device.camera.source import Frame
from device.camera.spec import parse_source
from device.clock import FakeClock
from device.config import CameraConfig
from device.errors import CameraError, ConfigError, EndOfStreamError
from device.vision.preprocess import Image

from .conftest import ROOT
from .test_image_guard import png_bomb

DEMO = ROOT / "demo"
Photo = Callable[[str], Image]


def test_image_folder_makes_a_moving_repeatable_sequence() -> None:
    clock = FakeClock()
    source = ImageFolderSource(DEMO, fps=15, seconds=2, clock=clock)
    source.open()
    frames = [source.read() for _ in range(30)]
    assert all(f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(30))
    # Consecutive frames differ (the photo moves) but only a little (the tracker can follow).
    diffs = [
        float(np.mean(np.abs(a.image.astype(int) - b.image.astype(int))))
        for a, b in itertools.pairwise(frames)
    ]
    assert min(diffs) > 0 and max(diffs[:20]) < 20
    # Paced at 15 fps on the injected clock.
    assert frames[-1].captured - frames[0].captured == pytest.approx(29 / 15, abs=1e-5)  # float64 at 1.8e9 s
    again = ImageFolderSource(DEMO, fps=15, seconds=2, clock=FakeClock())
    again.open()
    assert np.array_equal(again.read().image, frames[0].image)


def test_image_folder_one_pass_ends() -> None:
    source = ImageFolderSource(DEMO, fps=0, seconds=0.2, loop=False)
    source.open()
    count = 0
    with pytest.raises(EndOfStreamError):
        while True:
            source.read()
            count += 1
    assert count == 4 * source.frames_per_photo


def test_empty_image_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(CameraError, match="holds no readable photos"):
        ImageFolderSource(tmp_path).open()
    with pytest.raises(CameraError, match="cannot be read"):
        ImageFolderSource(tmp_path / "absent").open()


def test_image_folder_skips_bombs_and_broken_files_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(DEMO / "coffee.png", tmp_path / "coffee.png")
    for i in range(12):  # headers of 20,000 x 20,000 pixels (1.2 GB each once decoded), one row of data
        (tmp_path / f"bomb-{i:02d}.png").write_bytes(png_bomb(20_000, 20_000, rows=1))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(10))
    source = ImageFolderSource(tmp_path, fps=0, seconds=0.2, loop=False)
    with caplog.at_level(logging.WARNING, logger="device.camera.image_folder"):
        source.open()
    assert source.refused == 13
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # A few files by name, then one line for the rest: a folder of bad files cannot flood the log.
    assert len(warnings) == 4
    assert f"image {tmp_path / 'bomb-00.png'} declares 20000x20000 pixels" in warnings[0]
    assert "13 file(s) skipped" in warnings[-1] and "10 more" in warnings[-1]
    frames = 0
    with pytest.raises(EndOfStreamError, match="all 1 photos shown"):
        while True:
            source.read()
            frames += 1
    assert frames == source.frames_per_photo
    # Reopening (after a camera error) finds the same bad files: counted again, not logged again.
    caplog.clear()
    source.close()
    with caplog.at_level(logging.WARNING, logger="device.camera.image_folder"):
        source.open()
    assert source.refused == 13 and not caplog.records


def test_image_folder_limit_comes_from_the_config(tmp_path: Path) -> None:
    shutil.copy(DEMO / "coffee.png", tmp_path / "coffee.png")  # 600 x 400
    spec = f"images:{tmp_path}?fps=0"
    with pytest.raises(CameraError, match="holds no readable photos"):
        make_source(CameraConfig(source=spec, max_image_pixels=239_999)).open()
    make_source(CameraConfig(source=spec, max_image_pixels=240_000)).open()


@pytest.fixture()
def clip(tmp_path: Path, photo: Photo) -> Path:
    """A real 20-frame MJPEG video written by OpenCV."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 20.0, (320, 240))
    base = cv2.resize(photo("coffee"), (320, 240))
    for i in range(20):
        writer.write(cv2.cvtColor(np.roll(base, 4 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_file_plays_then_ends(clip: Path) -> None:
    source = OpenCVSource("file", str(clip), clock=FakeClock())
    source.open()
    frames = [source.read() for _ in range(20)]
    assert frames[0].image.shape == (240, 320, 3)
    # RGB order: the coffee photo's mean colour is red-brown, so R > B.
    assert frames[0].image[..., 0].mean() > frames[0].image[..., 2].mean()
    with pytest.raises(EndOfStreamError, match="end of file after 20 frames"):
        source.read()
    source.close()
    source.close()  # closing twice is fine


def test_video_file_loops_when_asked(clip: Path) -> None:
    source = OpenCVSource("file", str(clip), loop=True, clock=FakeClock())
    source.open()
    assert len([source.read() for _ in range(45)]) == 45


def test_missing_video_and_camera_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        OpenCVSource("file", str(tmp_path / "none.mp4")).open()
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"not a video")
    with pytest.raises(CameraError, match="cannot be opened"):
        OpenCVSource("file", str(bogus)).open()
    with pytest.raises(CameraError, match="v4l2-ctl --list-devices"):
        OpenCVSource("v4l2", "/dev/video99").open()


def test_rtsp_credentials_are_redacted_from_the_name() -> None:
    source = OpenCVSource("rtsp", "rtsp://admin:hunter2@10.0.0.5/stream")
    assert "hunter2" not in source.name and source.name == "rtsp://admin:***@10.0.0.5/stream"


@pytest.fixture()
def fake_camera(photo: Photo) -> Iterator[type[FakePicamera2]]:
    FakePicamera2.scene = photo("astronaut")
    yield FakePicamera2
    FakePicamera2.scene = None
    FakePicamera2.fail_after = None
    FakePicamera2.cameras = [{"Model": "imx708", "Num": 0, "Location": 2}]


def test_picamera2_main_and_lores_from_one_capture(fake_camera: type[FakePicamera2], photo: Photo) -> None:
    source = Picamera2Source(width=640, height=480, lores_size=(300, 300), camera_class=fake_camera)
    source.open()
    frame = source.read()
    assert (
        frame.image.shape == (480, 640, 3) and frame.lores is not None and frame.lores.shape == (300, 300, 3)
    )
    expected_main = cv2.resize(photo("astronaut"), (640, 480))
    assert np.abs(frame.image.astype(int) - expected_main).mean() < 1  # B,G,R swapped back to RGB
    expected_lores = cv2.resize(expected_main, (300, 300))
    assert np.abs(frame.lores.astype(int) - expected_lores).mean() < 4  # through YUV420 with padded rows
    source.close()


def test_yuv420_with_row_padding_converts_exactly_like_unpadded(photo: Photo) -> None:
    rgb = cv2.resize(photo("coffee"), (300, 200))
    i420 = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)
    reference = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    assert np.array_equal(yuv420_to_rgb(padded_i420(i420, 300, 200, 320), 300, 200), reference)
    with pytest.raises(CameraError, match="is not YUV420"):
        yuv420_to_rgb(np.zeros((10, 10), np.uint8), 300, 200)


def test_no_pi_camera_says_how_to_choose_another_source(fake_camera: type[FakePicamera2]) -> None:
    fake_camera.cameras = []
    with pytest.raises(CameraError, match=r"no Pi camera found.*v4l2:/dev/video0.*images:DIR"):
        Picamera2Source(camera_class=fake_camera).open()
    with pytest.raises(CameraError, match="python3-picamera2 is not installed"):
        Picamera2Source().open()  # the real library is not on this machine


def test_picamera2_failure_mid_run_is_a_camera_error(fake_camera: type[FakePicamera2]) -> None:
    fake_camera.fail_after = 2
    source = Picamera2Source(lores_size=(300, 300), camera_class=fake_camera)
    source.open()
    source.read()
    source.read()
    with pytest.raises(CameraError, match="stopped delivering frames: Camera frontend has timed out"):
        source.read()


def test_source_specs() -> None:
    assert parse_source("images:demo?fps=5").options == {"fps": "5"}
    assert parse_source("rtsp://cam/1").kind == "rtsp"
    assert parse_source("v4l2:/dev/video0").target == "/dev/video0"
    with pytest.raises(ConfigError, match="is not one of picamera2"):
        parse_source("webcam")
    with pytest.raises(ConfigError, match="needs a path"):
        parse_source("file:")
    with pytest.raises(ConfigError, match="fps='fast' is not a number"):
        make_source(CameraConfig(source="images:demo?fps=fast"))


class FlakySource:
    """A FrameSource whose device fails after `fail_after` frames, twice, then recovers."""

    name = "flaky"

    def __init__(self, fail_after: int) -> None:
        self.fail_after = fail_after
        self.opens = 0
        self.open_failures = 1
        self.count = 0
        self.image = np.zeros((48, 64, 3), np.uint8)

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2 and self.open_failures:
            self.open_failures -= 1
            raise CameraError("device busy")
        self.count = 0

    def read(self) -> Frame:
        self.count += 1
        if self.opens == 1 and self.count > self.fail_after:
            raise CameraError("unplugged")
        time.sleep(0.002)
        return Frame(self.image, time.time(), self.count)

    def close(self) -> None:
        pass


def test_grabber_reopens_a_failed_source_and_reports_it() -> None:
    states: list[str] = []
    source = FlakySource(fail_after=3)
    grabber = FrameGrabber(source, Backoff(0.01, 0.05, jitter=0), on_state=states.append)
    grabber.start()
    frames: list[Frame] = []
    deadline = time.monotonic() + 5
    while len(frames) < 10 and time.monotonic() < deadline:
        frame = grabber.take(0.5)
        if frame is not None:
            frames.append(frame)
    grabber.stop()
    assert len(frames) == 10
    assert states[:3] == ["running", "reopening", "running"]
    assert grabber.stats.reopens == 1 and source.opens == 3
    assert grabber.stats.last_error == "device busy"


def test_grabber_keeps_only_the_latest_frame_and_counts_the_skipped() -> None:
    source = FlakySource(fail_after=10**9)
    grabber = FrameGrabber(source, Backoff(0.01, 0.05))
    grabber.start()
    time.sleep(0.3)  # a slow consumer: the camera keeps producing meanwhile
    frame = grabber.take(1.0)
    grabber.stop()
    assert frame is not None
    assert grabber.stats.skipped >= 10
    assert frame.index >= grabber.stats.skipped  # the newest, not the oldest


class BuggySource(FlakySource):
    """A source whose third read raises what no source should: a bug, not a CameraError."""

    def read(self) -> Frame:
        if self.opens == 1 and self.count == 2:
            self.count += 1
            raise ZeroDivisionError("division by zero in a driver")
        return super().read()


def test_an_unexpected_error_restarts_the_camera_thread_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    source = BuggySource(fail_after=10**6)
    source.open_failures = 0
    grabber = FrameGrabber(source, Backoff(0.01, 0.05, jitter=0))
    with caplog.at_level(logging.ERROR, logger="device.supervise"):
        grabber.start()
        frames = [f for f in (grabber.take(1.0) for _ in range(40)) if f is not None][:10]
    grabber.stop()
    assert len(frames) == 10 and source.opens == 2  # frames again after the restart
    assert grabber.stats.crashes == 1 and grabber.stats.reopens == 1
    assert grabber.stats.last_error == "unexpected ZeroDivisionError: division by zero in a driver"
    [record] = [r for r in caplog.records if "camera thread failed" in r.getMessage()]
    assert record.exc_info is not None  # logged with its traceback

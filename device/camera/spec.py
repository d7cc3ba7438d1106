"""Source spec strings, as an operator writes them in config or on the command line.

picamera2                       the Pi camera (main + lores streams)
picamera2:1                     the second Pi camera
v4l2:/dev/video0                a USB camera through V4L2
file:clip.mp4                   a video file (played at its own frame rate; ?loop=1 to repeat)
rtsp://user@host/stream         a network camera
images:DIR?fps=15               still photos turned into a moving sequence (the demo source)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from device.errors import ConfigError

KINDS = ("picamera2", "v4l2", "file", "rtsp", "images")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    target: str  # device path, file path, URL or directory; "" for the default camera
    options: dict[str, str] = field(default_factory=dict)

    def number(self, key: str, default: float) -> float:
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"camera source option {key}={raw!r} is not a number") from None


def parse_source(text: str) -> SourceSpec:
    text = text.strip()
    if text.startswith(("rtsp://", "rtsps://")):
        return SourceSpec("rtsp", text)
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise ConfigError(
            f"camera source {text!r} is not one of picamera2, v4l2:/dev/videoN, file:PATH, rtsp://..., "
            "images:DIR?fps=N"
        )
    target, _, query = rest.partition("?")
    if kind in ("v4l2", "file", "images") and not target:
        raise ConfigError(f"camera source {text!r} needs a path after '{kind}:'")
    return SourceSpec(kind, target, dict(parse_qsl(query)))

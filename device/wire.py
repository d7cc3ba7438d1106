"""The object message, format v1: what the appliance publishes on `appliance/<id>/objects`.

This module is the wire contract. It imports only the standard library, so an MQTT subscriber can copy
or import it alone, without numpy, LiteRT or the rest of the firmware. docs/wire.md documents every byte;
tests/data/wire/ holds golden vectors for other implementations.

Layout (little-endian), fixed header of 48 bytes, then three short strings, then the vector:

    off size type  field
      0    4 4s    magic b"AOBJ"
      4    1 u8    format version (1)
      5    1 u8    flags (0; reserved, receivers must ignore unknown bits)
      6    2 u16   class id
      8    8 u64   seq: the device's sequence number, monotonic, never repeats (survives restarts)
     16    8 i64   capture time, microseconds since the Unix epoch (UTC)
     24    4 u32   track id
     28    4 f32   detection score, 0..1
     32   16 4xf32 box x1, y1, x2, y2, normalised to the frame (0..1)
     48    1 u8    n = length of label, then n bytes UTF-8
      .    1 u8    n = length of embedder model id, then n bytes UTF-8
      .    1 u8    n = length of embedder model version, then n bytes UTF-8
      .    4 f32   vector scale
      .    2 i16   vector zero point
      .    2 u16   d = vector dimension, then d bytes of int8 values

real value of element i = (values[i] - zero_point) * scale.
"""

from __future__ import annotations

import math
import struct
import unicodedata
from dataclasses import dataclass

MAGIC = b"AOBJ"
VERSION = 1
CONTENT_TYPE = "application/vnd.appliance.object.v1"
_HEADER = struct.Struct("<4sBBHQqIf4f")
_VECTOR = struct.Struct("<fhH")
MAX_TEXT = 255  # a u8 length prefix
MAX_DIM = 65535
HEADER_SIZE = _HEADER.size  # 48
VECTOR_HEADER_SIZE = _VECTOR.size  # 8: scale, zero point, dim


class WireError(ValueError):
    """A payload is not a valid object message; the message says which field and why."""


@dataclass(frozen=True)
class ObjectMessage:
    seq: int
    captured_us: int
    track_id: int
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to the frame
    model_id: str
    model_version: str
    scale: float
    zero_point: int
    vector: bytes  # int8 values, one byte each (two's complement)
    flags: int = 0

    @property
    def dim(self) -> int:
        return len(self.vector)

    def with_seq(self, seq: int) -> ObjectMessage:
        """A copy numbered `seq` (the outbox's hot path: three times quicker than dataclasses.replace).
        Every field is listed; tests/test_wire.py checks the result equals replace()'s."""
        return ObjectMessage(
            seq,
            self.captured_us,
            self.track_id,
            self.class_id,
            self.label,
            self.score,
            self.box,
            self.model_id,
            self.model_version,
            self.scale,
            self.zero_point,
            self.vector,
            self.flags,
        )

    def values(self) -> list[int]:
        """The int8 vector as Python ints (-128..127)."""
        return [b - 256 if b > 127 else b for b in self.vector]

    def to_dict(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "seq": self.seq,
            "captured_us": self.captured_us,
            "track_id": self.track_id,
            "class_id": self.class_id,
            "label": self.label,
            "score": round(self.score, 6),
            "box": [round(v, 6) for v in self.box],
            "model_id": self.model_id,
            "model_version": self.model_version,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "dim": self.dim,
            "vector": self.values(),
        }


def encode(message: ObjectMessage) -> bytes:
    """The v1 payload for `message`; WireError when a field does not fit its encoding or holds a value
    a receiver would refuse (the same rules as decode)."""
    _check_ranges(message)
    check_values(message)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        message.flags,
        message.class_id,
        message.seq,
        message.captured_us,
        message.track_id,
        message.score,
        *message.box,
    )
    texts = b"".join(
        _text(name, value)
        for name, value in (
            ("label", message.label),
            ("model_id", message.model_id),
            ("model_version", message.model_version),
        )
    )
    vector = _VECTOR.pack(message.scale, message.zero_point, len(message.vector))
    return header + texts + vector + bytes(message.vector)


def decode(payload: bytes) -> ObjectMessage:
    """Parse a v1 payload; WireError says what is wrong with it."""
    if len(payload) < _HEADER.size:
        raise WireError(f"payload of {len(payload)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, flags, class_id, seq, captured, track, score, *box = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}, expected {MAGIC!r}: not an object message")
    if version != VERSION:
        raise WireError(f"format version {version} is not supported (this decoder reads {VERSION})")
    offset = _HEADER.size
    label, offset = _read_text(payload, offset, "label")
    model_id, offset = _read_text(payload, offset, "model_id")
    model_version, offset = _read_text(payload, offset, "model_version")
    if len(payload) < offset + _VECTOR.size:
        raise WireError("payload ends inside the vector header")
    scale, zero_point, dim = _VECTOR.unpack_from(payload, offset)
    offset += _VECTOR.size
    if len(payload) != offset + dim:
        raise WireError(f"vector of dimension {dim} needs {offset + dim} bytes, payload has {len(payload)}")
    message = ObjectMessage(
        seq=seq,
        captured_us=captured,
        track_id=track,
        class_id=class_id,
        label=label,
        score=score,
        box=(box[0], box[1], box[2], box[3]),
        model_id=model_id,
        model_version=model_version,
        scale=scale,
        zero_point=zero_point,
        vector=bytes(payload[offset:]),
        flags=flags,
    )
    check_values(message)
    return message


def check_values(m: ObjectMessage) -> None:
    """The rules every receiver applies (docs/wire.md, "What a receiver refuses"). A NaN or an infinity
    in a float would otherwise flow into a quote (an infinite scale priced as "ok") or into JSON that
    no parser reads; a chained comparison is False for NaN, so each check also refuses NaN."""
    if not 0.0 <= m.score <= 1.0:
        raise WireError(f"score = {m.score} is not a number in 0..1")
    x1, y1, x2, y2 = m.box
    if not all(0.0 <= v <= 1.0 for v in m.box):
        raise WireError(f"box = {list(m.box)} has a value that is not a number in 0..1")
    if x1 > x2 or y1 > y2:
        raise WireError(f"box = {list(m.box)} is inverted: x1 <= x2 and y1 <= y2 are required")
    if not (math.isfinite(m.scale) and m.scale > 0.0):
        raise WireError(f"vector scale = {m.scale} must be a finite number above 0")
    if not m.vector:
        raise WireError("vector dimension is 0: an object message carries at least one value")
    for name, text in (("label", m.label), ("model_id", m.model_id), ("model_version", m.model_version)):
        if not text:
            raise WireError(f"{name} is empty")
        if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text):
            raise WireError(f"{name} {text!r} contains a control, format or unassigned character")


# Cc control, Cf format (U+FEFF, bidi overrides, zero-width joiners), Cs surrogates, Cn unassigned:
# none belongs in a label or a model name, and each can hide what a log line or a UI shows.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn"})


def _text(name: str, value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > MAX_TEXT:
        raise WireError(f"{name} is {len(data)} bytes in UTF-8; the limit is {MAX_TEXT}")
    return bytes([len(data)]) + data


def _read_text(payload: bytes, offset: int, name: str) -> tuple[str, int]:
    if offset >= len(payload):
        raise WireError(f"payload ends before {name}")
    end = offset + 1 + payload[offset]
    if end > len(payload):
        raise WireError(f"{name} runs past the end of the payload")
    try:
        return payload[offset + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise WireError(f"{name} is not valid UTF-8") from None


def _check_ranges(m: ObjectMessage) -> None:
    limits = {
        "seq": (m.seq, 0, 2**64 - 1),
        "track_id": (m.track_id, 0, 2**32 - 1),
        "class_id": (m.class_id, 0, 65535),
        "zero_point": (m.zero_point, -32768, 32767),
        "flags": (m.flags, 0, 255),
        "captured_us": (m.captured_us, -(2**63), 2**63 - 1),
    }
    for name, (value, low, high) in limits.items():
        if not low <= value <= high:
            raise WireError(f"{name} = {value} is outside {low}..{high}")
    if len(m.vector) > MAX_DIM:
        raise WireError(f"vector dimension {len(m.vector)} exceeds {MAX_DIM}")

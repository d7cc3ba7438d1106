"""The object message v1: golden vectors, round trips, malformed payloads, size, and no heavy imports."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from device.wire import CONTENT_TYPE, ObjectMessage, WireError, decode, encode

from .cli_helpers import appliance
from .conftest import DATA, ROOT

GOLDEN = DATA / "wire"
NAMES = ("small", "full_1280")


def golden(name: str) -> tuple[bytes, dict[str, object]]:
    return (GOLDEN / f"{name}.bin").read_bytes(), json.loads((GOLDEN / f"{name}.json").read_text())


def from_fields(fields: dict[str, object]) -> ObjectMessage:
    vector = struct.pack(f"<{fields['dim']}b", *fields["vector"])  # type: ignore[misc]
    keep = {k: v for k, v in fields.items() if k not in ("version", "dim", "vector")}
    keep["box"] = tuple(keep["box"])  # type: ignore[arg-type]
    return ObjectMessage(**keep, vector=vector)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_golden_vectors_decode_to_the_documented_fields(name: str) -> None:
    payload, fields = golden(name)
    message = decode(payload)
    assert message.seq == fields["seq"] and message.track_id == fields["track_id"]
    assert message.captured_us == fields["captured_us"] and message.class_id == fields["class_id"]
    assert message.label == fields["label"] and message.score == fields["score"]
    assert list(message.box) == fields["box"]
    assert (message.model_id, message.model_version) == (fields["model_id"], fields["model_version"])
    assert (message.scale, message.zero_point) == (fields["scale"], fields["zero_point"])
    assert message.dim == fields["dim"] and message.values() == fields["vector"]


@pytest.mark.parametrize("name", NAMES)
def test_golden_vectors_encode_byte_for_byte(name: str) -> None:
    payload, fields = golden(name)
    assert encode(from_fields(fields)) == payload


def test_the_small_vector_layout_by_offset() -> None:
    """Spot-check docs/wire.md's offsets against the bytes themselves."""
    payload, _ = golden("small")
    assert payload[0:4] == b"AOBJ" and payload[4] == 1 and payload[5] == 0
    assert struct.unpack_from("<H", payload, 6)[0] == 41  # class id
    assert struct.unpack_from("<Q", payload, 8)[0] == 42  # seq
    assert struct.unpack_from("<I", payload, 24)[0] == 7  # track id
    assert payload[48] == 3 and payload[49:52] == b"cup"
    assert payload[-8:] == bytes([0x80, 0xFF, 0, 1, 2, 64, 127, 0xC0])


def test_full_size_message_fits_the_budget() -> None:
    payload, _ = golden("full_1280")
    assert decode(payload).dim == 1280
    assert len(payload) <= 1400  # ARCHITECTURE.md: <= 1.4 KB for a 1280-d vector


def test_round_trip_keeps_every_field() -> None:
    message = decode(golden("small")[0])
    changed = replace(message, seq=2**64 - 1, track_id=0, label="x", model_version="x" * 255)
    assert decode(encode(changed)) == changed


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda p: p[:20], "shorter than the 48-byte header"),
        (lambda p: b"XOBJ" + p[4:], "bad magic"),
        (lambda p: p[:4] + b"\x02" + p[5:], "format version 2 is not supported"),
        (lambda p: p[:-1], "vector of dimension 8 needs"),
        (lambda p: p + b"\x00", "vector of dimension 8 needs"),
        (lambda p: p[:48] + b"\xff" + p[49:], "label runs past the end"),
        (lambda p: p[:49] + b"\xff\xfe\xfd" + p[52:], "label is not valid UTF-8"),
    ],
)
def test_malformed_payloads_say_what_is_wrong(mutate: object, error: str) -> None:
    payload = golden("small")[0]
    with pytest.raises(WireError, match=error):
        decode(mutate(payload))  # type: ignore[operator]


def _patched(payload: bytes, fmt: str, offset: int, *values: float) -> bytes:
    data = bytearray(payload)
    struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


NAN, INF = float("nan"), float("inf")
SCALE_AT = -8 - 8  # the small vector: scale (f32), zero point, dim, then 8 values


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        (("<f", 28, NAN), "score = nan"),
        (("<f", 28, INF), "score = inf"),
        (("<f", 28, 1.5), "score = 1.5"),
        (("<f", 28, -0.25), "score = -0.25"),
        (("<f", 32, NAN), "box = .nan"),
        (("<f", 36, -INF), "box = .*-inf"),
        (("<f", 44, 1.25), "not a number in 0..1"),
        (("<4f", 32, 0.75, 0.25, 0.5, 0.875), "inverted"),
        (("<4f", 32, 0.125, 0.875, 0.5, 0.25), "inverted"),
        (("<f", SCALE_AT, INF), "scale = inf"),
        (("<f", SCALE_AT, -INF), "scale = -inf"),
        (("<f", SCALE_AT, NAN), "scale = nan"),
        (("<f", SCALE_AT, 0.0), "scale = 0.0"),
        (("<f", SCALE_AT, -0.5), "scale = -0.5"),
    ],
)
def test_receivers_refuse_nan_infinity_and_out_of_range_floats(patch: tuple[object, ...], error: str) -> None:
    payload = golden("small")[0]
    fmt, offset, *values = patch
    offset = offset if offset >= 0 else len(payload) + offset  # type: ignore[operator]
    bad = _patched(payload, fmt, offset, *values)  # type: ignore[arg-type]
    with pytest.raises(WireError, match=error):
        decode(bad)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"label": ""}, "label is empty"),
        ({"model_id": ""}, "model_id is empty"),
        ({"model_version": ""}, "model_version is empty"),
        ({"label": "cup\ufeff"}, "label .* contains a control"),
        ({"label": "cup\x00"}, "label .* contains a control"),
        ({"model_id": "a\u202eb"}, "model_id .* contains a control"),
        ({"vector": b""}, "dimension is 0"),
        ({"scale": INF}, "scale = inf"),
        ({"score": NAN}, "score = nan"),
    ],
)
def test_the_encoder_applies_the_receivers_rules(change: dict[str, object], error: str) -> None:
    """A device never sends what a receiver refuses; the same function judges both sides."""
    message = replace(decode(golden("small")[0]), **change)  # type: ignore[arg-type]
    with pytest.raises(WireError, match=error):
        encode(message)
    with pytest.raises(WireError, match=error):  # the same payload built by hand: decode refuses it
        decode(_hand_built(message, golden("small")[0]))


def _hand_built(message: ObjectMessage, valid: bytes) -> bytes:
    """`message`'s bytes without the encoder's checks: the header of a valid payload with the floats,
    texts and vector of `message` put in by hand."""
    head = bytearray(valid[:48])
    struct.pack_into("<f4f", head, 28, message.score, *message.box)
    texts = b"".join(
        bytes([len(t.encode())]) + t.encode()
        for t in (message.label, message.model_id, message.model_version)
    )
    vector = struct.pack("<fhH", message.scale, message.zero_point, len(message.vector)) + message.vector
    return bytes(head) + texts + vector


def test_encoder_refuses_values_that_do_not_fit() -> None:
    message = decode(golden("small")[0])
    with pytest.raises(WireError, match="track_id = -1"):
        encode(replace(message, track_id=-1))
    with pytest.raises(WireError, match="label is 300 bytes"):
        encode(replace(message, label="é" * 150))


def test_wire_imports_nothing_heavy() -> None:
    """A subscriber can use device.wire alone: no numpy, no LiteRT, no paho, no pydantic."""
    code = (
        "import sys, device.wire; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'cv2', 'ai_edge_litert', 'paho', 'pydantic'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def wire_decode(stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """`appliance wire decode` as an operator pipes a payload into it."""
    command = [sys.executable, "-m", "device", "wire", "decode"]
    return subprocess.run(command, input=stdin, capture_output=True, cwd=ROOT, timeout=60, check=False)


def test_cli_decodes_stdin_with_or_without_a_trailing_newline() -> None:
    payload, fields = golden("small")
    for data in (payload, payload + b"\n"):
        result = wire_decode(data)
        assert result.returncode == 0, result.stderr
        decoded = json.loads(result.stdout)
        assert decoded["seq"] == 42 and decoded["label"] == "cup" and decoded["vector"] == fields["vector"]


def test_cli_rejects_garbage_on_stdin(tmp_path: Path) -> None:
    result = wire_decode(b"hello\n")
    assert result.returncode == 66
    assert b"not an object message" in result.stderr and b"Traceback" not in result.stderr
    assert appliance("wire", "--help").returncode == 0
    assert CONTENT_TYPE.endswith(".v1")


def test_cli_refuses_a_message_with_an_infinite_scale_instead_of_printing_invalid_json() -> None:
    payload = golden("small")[0]
    result = wire_decode(_patched(payload, "<f", len(payload) + SCALE_AT, INF))
    assert result.returncode == 66, result.stdout
    assert b"scale = inf" in result.stderr and result.stdout == b""


@pytest.mark.parametrize("name", NAMES)
def test_with_seq_changes_the_seq_and_nothing_else(name: str) -> None:
    message = decode(golden(name)[0])
    numbered = message.with_seq(message.seq + 41)
    assert numbered == replace(message, seq=message.seq + 41) and numbered.flags == message.flags

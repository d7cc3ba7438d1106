"""A seeded corpus of what one hostile (or broken) device can send the pricing service.

One list, used twice: tests/test_hostile_mqtt.py sends a few thousand of these through a real broker
and checks that other devices' quotes carry on, and `pricing-service bench fuzz` sends many more and
reports the rate survived, the service's memory before and after, and other devices' round trip during
the attack. Every kind below was seen to hurt the service once (issue 11).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.wire import CONTENT_TYPE, ObjectMessage, encode

OVERSIZE = 15_000
# U+FEFF passes mosquitto but paho refuses it [MQTT-1.5.4-3]; each property it can hide in.
_BOM = "\ufeff"


@dataclass(frozen=True)
class Attack:
    kind: str
    payload: bytes
    content_type: str | None = CONTENT_TYPE
    response_topic: str | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)


def template(model_id: str, model_version: str, dim: int) -> ObjectMessage:
    """A valid message for the catalog under attack, so that only the attacked field is wrong."""
    return ObjectMessage(
        1,
        0,
        1,
        41,
        "cup",
        0.9,
        (0.1, 0.1, 0.5, 0.5),
        model_id,
        model_version,
        0.01,
        0,
        b"\x64" + bytes(dim - 1),
    )


def corpus(count: int, seed: int, base: ObjectMessage, device: str) -> Iterator[Attack]:
    """`count` attacks, cycling through every kind, reproducible from `seed`."""
    rng = random.Random(seed)
    kinds = [
        _random_bytes,
        _mutated,
        _bad_float,
        _oversize,
        _sparse_seq,
        _huge_seq,
        _bad_property,
        _other_content_type,
        _unknown_model,
        _other_device_reply,
        _epoch_churn,
    ]
    good = encode(base)
    for i in range(count):
        yield kinds[i % len(kinds)](rng, base, good, device)


def _random_bytes(rng: random.Random, _b: ObjectMessage, _g: bytes, _d: str) -> Attack:
    return Attack("random", rng.randbytes(rng.randrange(0, 300)))


def _mutated(rng: random.Random, _b: ObjectMessage, good: bytes, _d: str) -> Attack:
    data = bytearray(good)
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return Attack("mutated", bytes(data[: rng.randrange(len(data) + 1)]))


def _bad_float(rng: random.Random, _b: ObjectMessage, good: bytes, _d: str) -> Attack:
    data = bytearray(good)
    value = rng.choice([float("nan"), float("inf"), -float("inf"), 1e38, -1.0, 2.0])
    offset = rng.choice([28, 32, 36, 40, 44, len(good) - len(_b.vector) - 8])  # score, box, scale
    struct.pack_into("<f", data, offset, value)
    return Attack("bad_float", bytes(data))


def _oversize(rng: random.Random, _b: ObjectMessage, good: bytes, _d: str) -> Attack:
    # Just under the production broker's max_packet_size (16 KB, deploy/mosquitto/appliance.conf): the
    # largest message that reaches the service. Bigger ones cost the sender its connection at the broker.
    return Attack("oversize", good + rng.randbytes(OVERSIZE - len(good)))


def _sparse_seq(rng: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    return Attack("sparse_seq", encode(replace(base, seq=rng.randrange(1, 2**64))))


def _huge_seq(_r: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    return Attack("huge_seq", encode(replace(base, seq=2**64 - 1)))


def _bad_property(rng: random.Random, base: ObjectMessage, _g: bytes, device: str) -> Attack:
    payload = encode(replace(base, seq=rng.randrange(1, 2**32)))
    where = rng.randrange(4)
    if where == 0:
        return Attack("bad_property", payload, response_topic=f"appliance/{device}/quotes{_BOM}")
    if where == 1:
        return Attack("bad_property", payload, content_type=CONTENT_TYPE + _BOM)
    if where == 2:
        return Attack("bad_property", payload, user_properties=[("note", _BOM)])
    return Attack("bad_property", payload, user_properties=[(_BOM, "x")])


def _other_content_type(rng: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    payload = encode(replace(base, seq=rng.randrange(1, 2**32)))
    return Attack("content_type", payload, content_type="application/vnd.appliance.object.v9")


def _unknown_model(rng: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    payload = encode(replace(base, seq=rng.randrange(1, 2**32), model_version=f"{rng.randrange(99)}.0.0"))
    return Attack("unknown_model", payload)


def _other_device_reply(rng: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    payload = encode(replace(base, seq=rng.randrange(1, 2**32)))
    return Attack("reply_elsewhere", payload, response_topic="appliance/victim/quotes")


def _epoch_churn(rng: random.Random, base: ObjectMessage, _g: bytes, _d: str) -> Attack:
    payload = encode(replace(base, seq=rng.randrange(1, 100)))
    return Attack("epoch_churn", payload, user_properties=[("epoch", f"{rng.getrandbits(64):016x}")])


def properties(attack: Attack) -> Properties:
    """The MQTT v5 properties to send `attack` with (paho writes any string it is given)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if attack.content_type is not None:
        props.ContentType = attack.content_type
    if attack.response_topic is not None:
        props.ResponseTopic = attack.response_topic
    if attack.user_properties:
        props.UserProperty = attack.user_properties
    return props

"""The pre-packed object-message properties encode the same properties as paho's own Properties do."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.link.properties import ObjectProperties
from device.wire import CONTENT_TYPE


def _read(packed: bytes) -> dict[str, object]:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.unpack(packed)  # type: ignore[no-untyped-call]
    fields: dict[str, object] = props.json()  # type: ignore[no-untyped-call]
    return fields


@pytest.mark.parametrize("topic", ["appliance/demo-001/quotes", "a/" + "x" * 300 + "/quotes"])
@pytest.mark.parametrize("seq", [0, 1, 255, 2**32 + 7, 2**64 - 1])
def test_same_bytes_as_paho(topic: str, seq: int) -> None:
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.ContentType = CONTENT_TYPE
    reference.ResponseTopic = topic
    reference.CorrelationData = seq.to_bytes(8, "little")
    reference.UserProperty = [("epoch", "0123456789abcdef")]
    fast = ObjectProperties(CONTENT_TYPE, topic, "0123456789abcdef").for_seq(seq)
    # The same properties and values, and the same length; the order of properties on the wire is free
    # (MQTT v5 3.3.2.3), and the fixed ones come first here.
    assert _read(fast.pack()) == _read(reference.pack())  # type: ignore[no-untyped-call]
    assert len(fast.pack()) == len(reference.pack())  # type: ignore[no-untyped-call]
    assert getattr(fast, "CorrelationData") == seq.to_bytes(8, "little")  # noqa: B009 - paho sets it dynamically
    assert getattr(fast, "ResponseTopic") == topic  # noqa: B009
    assert getattr(fast, "UserProperty") == [("epoch", "0123456789abcdef")]  # noqa: B009

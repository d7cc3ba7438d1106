"""The pre-packed object-message properties encode exactly as paho's own Properties do."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.link.properties import ObjectProperties
from device.wire import CONTENT_TYPE


@pytest.mark.parametrize("topic", ["appliance/demo-001/quotes", "a/" + "x" * 300 + "/quotes"])
@pytest.mark.parametrize("seq", [0, 1, 255, 2**32 + 7, 2**64 - 1])
def test_same_bytes_as_paho(topic: str, seq: int) -> None:
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.ContentType = CONTENT_TYPE
    reference.ResponseTopic = topic
    reference.CorrelationData = seq.to_bytes(8, "little")
    fast = ObjectProperties(CONTENT_TYPE, topic).for_seq(seq)
    assert fast.pack() == reference.pack()  # type: ignore[no-untyped-call]
    assert getattr(fast, "CorrelationData") == seq.to_bytes(8, "little")  # noqa: B009 - paho sets it dynamically
    assert getattr(fast, "ResponseTopic") == topic  # noqa: B009

"""MQTT v5 PUBLISH properties for object messages, built and encoded cheaply.

paho's Properties validates every assignment against its whole name table and re-derives the encoding
of every property on each pack(): about 100 µs per message, more than committing the message to the
SQLite outbox. An object message's content type and response topic never change, so they are encoded
once, by paho's own encoder, and only the correlation data (the seq) is encoded per message.
"""

from __future__ import annotations

import copy

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers, writeBytes

CORRELATION_DATA = 9  # MQTT v5 property identifier
EPOCH_PROPERTY = "epoch"


class _PrepackedProperties(Properties):
    """A Properties whose fixed part was packed once. It is still a full Properties (str(), json() and
    the attributes work), so paho treats it like any other."""

    _fixed: bytes = b""
    CorrelationData: bytes

    def pack(self) -> bytes:
        correlation = bytes([CORRELATION_DATA]) + bytes(writeBytes(self.CorrelationData))  # type: ignore[no-untyped-call]
        body = self._fixed + correlation
        length: bytes = VariableByteIntegers.encode(len(body))  # type: ignore[no-untyped-call]
        return length + body


class ObjectProperties:
    def __init__(self, content_type: str, response_topic: str, epoch: str) -> None:
        template = _PrepackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        template.ContentType = content_type
        template.ResponseTopic = response_topic
        # The sequence epoch (docs/wire.md): receivers deduplicate on (device, epoch, seq).
        template.UserProperty = [(EPOCH_PROPERTY, epoch)]
        packed = Properties.pack(template)  # type: ignore[no-untyped-call]
        _length, prefix_size = VariableByteIntegers.decode(packed)  # type: ignore[no-untyped-call]
        object.__setattr__(template, "_fixed", bytes(packed[prefix_size:]))
        self._template = template

    def for_seq(self, seq: int) -> Properties:
        props = copy.copy(self._template)
        # The value is known valid (8 bytes), so skip Properties.__setattr__'s table scan.
        object.__setattr__(props, "CorrelationData", seq.to_bytes(8, "little"))
        return props

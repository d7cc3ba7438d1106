"""paho's MQTT client, except that one PUBLISH it cannot parse costs that message, not the connection.

paho refuses some strings that the MQTT v5 spec and mosquitto accept: readUTF() raises MalformedPacket
for U+FEFF anywhere in a string property (response topic, content type, a user property), although the
spec says a receiver must not strip or skip it [MQTT-1.5.4-3]. paho then drops the whole connection.
When the broker forwards such a message to a subscriber on a persistent session, the subscriber
reconnects, gets the same unacknowledged message again and drops again: one device's bad property takes
the pricing service off the air for everybody (issue 11, point 3).

`GuardedClient` contains it where paho parses a PUBLISH: the packet is acknowledged (so the broker does
not deliver it again), counted, logged at a falling rate, and the connection carries on. The message's
payload is never handed to the application: a device that sends such properties is refused, like one
that sends a malformed payload.

`_handle_publish` is paho's private method, and pyproject.toml allows any paho 2.x (>=2.1,<3), so a
minor release may rename or reshape it; this override would then never run and the old failure would
be back. tests/test_hostile_mqtt.py
(`test_a_property_paho_cannot_parse_costs_that_message_not_the_connection`) sends such packets through
a real mosquitto to the pricing service and checks that the connection was never dropped and that each
refusal was counted and logged, so a paho upgrade that breaks the hook fails that test, not a device.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MQTTException

log = logging.getLogger(__name__)

_QOS_MASK = 0x06
_PROTOCOL_ERRORS: tuple[type[Exception], ...] = (MQTTException, UnicodeDecodeError, struct.error)


class GuardedClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused_packets = 0  # written on the network thread only; read anywhere (an int is atomic)
        self.last_refused = ""

    def _handle_publish(self) -> MQTTErrorCode:
        try:
            return super()._handle_publish()
        except _PROTOCOL_ERRORS as exc:
            return self._refuse_publish(exc)

    def _refuse_publish(self, exc: Exception) -> MQTTErrorCode:
        packet = bytes(self._in_packet["packet"])
        qos = (self._in_packet["command"] & _QOS_MASK) >> 1
        topic, mid = _topic_and_mid(packet, qos)
        self.refused_packets += 1
        self.last_refused = f"on {topic!r}: {exc}"
        if self.refused_packets & (self.refused_packets - 1) == 0:  # the 1st, 2nd, 4th, 8th ...
            log.warning(
                "refused a PUBLISH paho cannot parse %s; connection kept (%d so far)",
                self.last_refused,
                self.refused_packets,
            )
        if qos == 0:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        if qos == 1 and mid is not None:
            return self._send_puback(mid)
        # QoS 2 needs paho's own state for PUBREL; nothing here subscribes at QoS 2, so a broker that
        # sends one anyway is treated as paho treats any protocol error.
        return MQTTErrorCode.MQTT_ERR_PROTOCOL


def _topic_and_mid(packet: bytes, qos: int) -> tuple[str, int | None]:
    """The topic and packet id of a PUBLISH body (after the fixed header), as far as they can be read."""
    if len(packet) < 2:
        return "", None
    (length,) = struct.unpack_from("!H", packet)
    topic = packet[2 : 2 + length].decode("utf-8", "replace")
    if qos == 0 or len(packet) < 2 + length + 2:
        return topic, None
    (mid,) = struct.unpack_from("!H", packet, 2 + length)
    return topic, mid

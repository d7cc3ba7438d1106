"""The benchmark's devices, in a process of their own (so their CPU is not the exporter's): publishes
one status and one stats message per simulated device, QoS 0 as the daemon does, then exits.
usage: python -m fleet.bench_publish PORT DEVICES"""

from __future__ import annotations

import random
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.fleetsim import device_id, encode, stats_message, status_message


def main(port: int, devices: int) -> int:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    rng = random.Random(11)
    last = None
    for device in range(devices):
        name = device_id(device)
        client.publish(f"appliance/{name}/status", encode(status_message(device)), qos=0)
        last = client.publish(f"appliance/{name}/stats", encode(stats_message(device, 1, rng)), qos=0)
    if last is not None:
        last.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))

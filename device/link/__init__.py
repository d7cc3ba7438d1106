"""The device's link to the broker: topic names, sequence numbers, the MQTT v5 client."""

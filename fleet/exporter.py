"""`fleet-exporter run`: every device's status and stats from the broker, as Prometheus metrics.

It subscribes to `<prefix>/+/status` (retained, and the devices' will), `<prefix>/+/stats` and
`pricing/+/stats`, and serves /metrics with prometheus_client's own HTTP server. Its broker identity
reads those topics only (deploy/mosquitto/acl, `user fleet-exporter`).

The MQTT callback stores the message itself (fleet/state.py: a size check, one JSON parse, a dictionary
store under a lock; tens of microseconds) instead of handing it to a queue and a worker: that is the whole
of the work, a hand-off would only add to it, and nothing in it can block the network loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, start_http_server

from device.clock import Clock, SystemClock
from device.link.client import Security, make_client
from device.ratelog import log_rarely
from fleet.collector import FleetCollector
from fleet.config import ExporterConfig
from fleet.state import FleetState

log = logging.getLogger(__name__)

SWEEP_S = 60.0  # forget silent devices this often even when nobody scrapes


class Exporter:
    def __init__(self, config: ExporterConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.state = FleetState(
            config.topic_prefix, self.clock, config.drop_after_s, config.max_devices, config.max_message_bytes
        )
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(self.state, self.clock))
        self.connected = threading.Event()  # and subscribed: set on the SUBACK, cleared on a disconnect
        security = Security(
            config.username, config.password_file, False, config.ca_file, config.cert_file, config.key_file
        )
        self.client = make_client(config.client_id, security, None, where="")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_subscribe = lambda *_: self.connected.set()
        self.client.on_message = self._on_message

    @property
    def topics(self) -> list[str]:
        prefix = self.config.topic_prefix
        return [f"{prefix}/+/status", f"{prefix}/+/stats", "pricing/+/stats"]

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        log.info("connected; reading %s", ", ".join(self.topics))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        outcome = self.state.ingest(message.topic, message.payload)
        if outcome.startswith("refused:"):
            refused = sum(v for k, v in self.state.tally().items() if k.startswith("refused:"))
            log_rarely(
                log, logging.WARNING, refused, f"refused a message on {message.topic[:200]}: {outcome[8:]}"
            )

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        cfg = self.config
        server, _thread = start_http_server(cfg.listen_port, cfg.listen_host, registry=self.registry)
        log.info("serving http://%s:%d/metrics", cfg.listen_host, cfg.listen_port)
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(cfg.host, cfg.port, keepalive=30)
        self.client.loop_start()
        if ready is not None:
            ready.set()
        try:
            while not stop.wait(SWEEP_S):
                self.state.snapshot()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            server.shutdown()
            server.server_close()

"""The pricing service's /metrics (issue 17): requests, errors by kind, the quote latency histogram,
the index and its catalogs, scraped over HTTP from a real service on a real broker."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.wire import CONTENT_TYPE, decode, encode
from pricing.catalog import load_catalog
from pricing.config import ServiceConfig
from pricing.pricer import Pricer
from pricing.service import PricingService
from rigs.broker import free_port

from .broker import Mosquitto
from .conftest import DATA
from .mqtt_helpers import Collector, wait_until
from .pricing_helpers import running_service
from .prom_helpers import Samples, sample, scrape_text


@pytest.fixture()
def service(broker: Mosquitto, demo_catalog: Path) -> Iterator[PricingService]:
    config = ServiceConfig(port=broker.port, catalog=demo_catalog, index="exact", metrics_port=free_port())
    with running_service(config) as running:
        yield running


def metrics(service: PricingService) -> Samples:
    url = f"http://127.0.0.1:{service.config.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return scrape_text(response.read().decode())


def send(client: mqtt.Client, seq: int, content_type: str) -> None:
    template = decode((DATA / "wire" / "full_1280.bin").read_bytes())
    message = template.__class__(
        **{**template.__dict__, "seq": seq, "model_id": "efficientnet-lite0-int8", "model_version": "1.0.0"}
    )
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    props.ResponseTopic = "appliance/shop-1/quotes"
    client.publish("appliance/shop-1/objects", encode(message), qos=1, properties=props).wait_for_publish(5)


def test_metrics_count_requests_errors_and_quote_latency(broker: Mosquitto, service: PricingService) -> None:
    quotes = Collector(broker.port, "appliance/+/quotes")
    device = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    send(device, 1, CONTENT_TYPE)
    send(device, 2, "text/plain")  # refused: not an object message
    quotes.wait_for(lambda: len(quotes.on("/quotes")) == 1, 10, "the quote")
    assert wait_until(
        lambda: sample(metrics(service), "pricing_requests_total", instance="pricing-1") == 2, 10
    )
    got = metrics(service)
    me = {"instance": "pricing-1"}
    assert sample(got, "pricing_errors_total", **me, kind="content_type") == 1.0
    assert sample(got, "pricing_quote_latency_seconds_count", **me) == 1.0
    assert 0 < (sample(got, "pricing_quote_latency_seconds_sum", **me) or 0) < 5
    assert sample(got, "pricing_quote_latency_seconds_bucket", **me, le="+Inf") == 1.0
    statuses = {s: sample(got, "pricing_quotes_total", **me, status=s) for s in ("ok", "insufficient_data")}
    assert sum(v or 0 for v in statuses.values()) == 1.0
    assert sample(got, "pricing_index_items", **me) == 96.0
    catalog = {**me, "model": "efficientnet-lite0-int8", "version": "1.0.0", "items": "96"}
    assert sample(got, "pricing_catalog_info", **catalog) == 1.0
    device.loop_stop()
    quotes.close()


def test_metrics_are_off_unless_a_port_is_set(demo_catalog: Path) -> None:
    config = ServiceConfig(catalog=demo_catalog, index="exact")
    assert config.metrics_port == 0
    assert PricingService(config, Pricer(load_catalog(demo_catalog), config))._serve_metrics() is None

"""The pricing service over a real mosquitto: shared subscription across copies, and the whole loop
with the real daemon."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.wire import CONTENT_TYPE, decode, encode
from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog
from pricing.config import ServiceConfig
from pricing.service import PricingService

from .broker import Mosquitto
from .conftest import DATA, ROOT
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env
from .pricing_helpers import running_service


def test_demo_catalog_is_marked_synthetic(demo_catalog: Path) -> None:
    catalog = load_catalog(demo_catalog)
    assert catalog.info.synthetic and len(catalog) == 96 and 0.2 < catalog.sold.mean() < 0.8


@pytest.fixture()
def two_services(broker: Mosquitto, demo_catalog: Path) -> Iterator[list[PricingService]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_service(
                    ServiceConfig(port=broker.port, catalog=demo_catalog, instance=name, index="exact")
                )
            )
            for name in ("pricing-a", "pricing-b")
        ]


def test_two_copies_on_one_shared_subscription_answer_each_request_once(
    broker: Mosquitto, two_services: list[PricingService]
) -> None:
    quotes = Collector(broker.port, "appliance/+/quotes")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    template = decode((DATA / "wire" / "full_1280.bin").read_bytes())
    sent = 0
    for device in ("shop-1", "shop-2"):
        for seq in range(1, 101):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = CONTENT_TYPE
            props.ResponseTopic = f"appliance/{device}/quotes"
            props.CorrelationData = seq.to_bytes(8, "little")
            payload = encode(
                template.__class__(
                    **{
                        **template.__dict__,
                        "seq": seq,
                        "model_id": "efficientnet-lite0-int8",
                        "model_version": "1.0.0",
                    }
                )
            )
            sender.publish(f"appliance/{device}/objects", payload, qos=1, properties=props).wait_for_publish(
                5
            )
            sent += 1
    quotes.wait_for(lambda: len(quotes.on("/quotes")) >= sent, 30, "a quote for every request")
    sender.loop_stop()
    answers = [(m.topic, m.json()["seq"]) for m in quotes.on("/quotes")]
    quotes.close()
    assert len(answers) == len(set(answers)) == sent  # each once, none twice
    assert all(m.correlation is not None for m in quotes.on("/quotes"))
    shares = [s.counts["received"] for s in two_services]
    assert sum(shares) == sent and min(shares) > 0  # both copies took part


def test_the_whole_loop_device_to_quote(broker: Mosquitto, demo_catalog: Path, tmp_path: Path) -> None:
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pricing",
            "run",
            "--port",
            str(broker.port),
            "--catalog",
            str(demo_catalog),
            "--stats-interval-s",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    watcher = Collector(broker.port, "#")
    watcher.wait_for(
        lambda: any(m.json().get("state") == "online" for m in watcher.on("pricing-1/status")),
        30,
        "the service online",
    )
    daemon = start_daemon(daemon_env(broker.port, tmp_path / "state"), "--live", log=tmp_path / "daemon.log")
    try:
        watcher.wait_for(lambda: len(watcher.on("test-dev/quotes")) >= 2, 60, "quotes for the device")
        watcher.wait_for(
            lambda: any(m.json()["counts"].get("ok", 0) >= 2 for m in watcher.on("pricing-1/stats")),
            15,
            "the service's stats counting the quotes",
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        service.send_signal(signal.SIGTERM)
        service.wait(10)
    objects = {decode(m.payload).seq: decode(m.payload) for m in watcher.on("test-dev/objects")}
    for message in watcher.on("test-dev/quotes"):
        quote = message.json()
        assert quote["seq"] in objects and quote["track_id"] == objects[quote["seq"]].track_id
        assert int.from_bytes(message.correlation or b"", "little") == quote["seq"]
        assert quote["status"] == "ok" and quote["currency"] == "JPY" and quote["synthetic"] is True
        assert quote["avg_sold_price"] > 0 and 0 <= quote["sell_through"] <= 1 and quote["n"] >= 3
    log = (tmp_path / "daemon.log").read_text()
    assert "quote  seq=" in log and "round trip" in log  # --live shows quotes beside the objects
    stats = [m.json() for m in watcher.on("pricing-1/stats")]
    assert stats[-1]["counts"]["received"] >= stats[-1]["counts"]["ok"] >= 2
    watcher.close()
    assert json.loads(watcher.on("pricing-1/status")[-1].payload)["state"] == "offline"


def test_sighup_reloads_the_catalog_list_without_a_restart(broker: Mosquitto, tmp_path: Path) -> None:
    """`systemctl reload pricing`: a catalog for the next embedder version joins the running service; a
    reload that names a missing catalog is refused and the service keeps what it had."""
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    for path, version in ((old, "1.0.0"), (new, "1.1.0")):
        vector = np.zeros(8, np.int8).tobytes()
        write_catalog(
            path,
            CatalogInfo("emb", version, 8, synthetic=True),
            [Item("a", vector, 0.1, 0, 5.0, "JPY", "sold")],
        )
    config = tmp_path / "pricing.toml"
    config.write_text(f'catalog = ["{old}"]\nport = {broker.port}\ninstance = "reloader"\nindex = "exact"\n')
    collector = Collector(broker.port, "pricing/reloader/status")
    log = tmp_path / "pricing.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "pricing", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:

        def catalogs() -> list[list[str]]:
            online = [m.json() for m in collector.on("status") if m.json()["state"] == "online"]
            return [c["model"] for c in online[-1]["catalogs"]] if online else []

        collector.wait_for(lambda: catalogs() == [["emb", "1.0.0"]], 30, "the service online")
        config.write_text(config.read_text().replace(f'["{old}"]', f'["{old}", "{new}"]'))
        service.send_signal(signal.SIGHUP)
        collector.wait_for(lambda: catalogs() == [["emb", "1.0.0"], ["emb", "1.1.0"]], 30, "the reload")
        config.write_text(config.read_text().replace(f'"{new}"', f'"{tmp_path / "missing.sqlite"}"'))
        service.send_signal(signal.SIGHUP)
        collector.wait_for(lambda: "reload refused" in log.read_text(), 30, "the refused reload")
        assert service.poll() is None and catalogs() == [["emb", "1.0.0"], ["emb", "1.1.0"]]
        service.send_signal(signal.SIGTERM)
        assert service.wait(10) == 0
    finally:
        if service.poll() is None:
            service.kill()
        collector.close()


def test_a_device_whose_state_was_wiped_gets_quotes_again(
    broker: Mosquitto, demo_catalog: Path, tmp_path: Path
) -> None:
    """Re-flashed or wiped, a device numbers its messages from 1 again. Its new sequence epoch (an MQTT
    v5 user property) tells the service so; before, every message was dropped as a repeat until the
    service restarted."""
    config = ServiceConfig(port=broker.port, catalog=demo_catalog, index="exact")
    watcher = Collector(broker.port, "appliance/test-dev/quotes")
    state = tmp_path / "state"
    with running_service(config) as service:
        for run in (1, 2):
            daemon = start_daemon(daemon_env(broker.port, state), log=tmp_path / f"daemon-{run}.log")
            watcher.wait_for(
                lambda run=run: sum(m.json()["seq"] == 1 for m in watcher.on("/quotes")) >= run,  # type: ignore[misc]
                60,
                f"a quote for seq 1 in run {run}",
            )
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
            shutil.rmtree(state)  # wiped: the outbox and its sequence floor are gone
    watcher.close()
    assert service.stats()["counts"]["epoch_changes"] == 1

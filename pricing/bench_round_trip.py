"""The quote round trip at catalog scale: from a device storing an object message in its outbox to the
quote arriving back at the device, through a loopback mosquitto. The real Outbox, Drainer and Link on
one side, the real PricingService on the other, over the index the search benchmark has just built (a
million items by default), so that the figure includes the search a fleet's service really does."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from device.clock import SystemClock
from device.config import MqttConfig, OutboxConfig
from device.link.drain import Drainer
from device.link.mqtt import Link
from device.link.outbox import Outbox
from device.link.topics import Topics
from device.wire import ObjectMessage
from pricing.catalog import Catalog, CatalogInfo
from pricing.config import ServiceConfig
from pricing.index import Int8Matrix, NeighbourIndex
from pricing.pricer import Pricer
from pricing.service import PricingService
from rigs.broker import local_broker

INFO = CatalogInfo("efficientnet-lite0-int8", "1.0.0", 0, synthetic=True)


def in_memory_catalog(vectors: Int8Matrix) -> Catalog:
    """A synthetic market over the benchmark's vectors: two in three sold, prices 100-149 JPY."""
    count = len(vectors)
    info = CatalogInfo(INFO.model_id, INFO.model_version, int(vectors.shape[1]), synthetic=True)
    return Catalog(
        info,
        [f"i{i}" for i in range(count)],
        vectors,
        (100.0 + np.arange(count) % 50).astype(np.float64),
        ["JPY"] * count,
        np.arange(count) % 3 != 0,
    )


def message_for(query: Int8Matrix, info: CatalogInfo) -> ObjectMessage:
    box = (0.1, 0.1, 0.5, 0.5)
    return ObjectMessage(
        0, 0, 1, 0, "cup", 0.9, box, info.model_id, info.model_version, 1 / 127, 0, query.tobytes()
    )


def quote_round_trip(
    vectors: Int8Matrix, index: NeighbourIndex, queries: Int8Matrix, samples: int = 200
) -> dict[str, Any]:
    catalog = in_memory_catalog(vectors)
    with local_broker() as port, tempfile.TemporaryDirectory(prefix="bench-trip-") as scratch:
        folder = Path(scratch)
        config = ServiceConfig(port=port, catalog=folder / "unused.sqlite", index=index.kind)
        service = PricingService(config, Pricer(catalog, config, index))
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(target=service.run, args=(stop, ready), daemon=True)
        thread.start()
        ready.wait(10)
        outbox_config = OutboxConfig()
        outbox = Outbox(folder / "outbox.sqlite", outbox_config, SystemClock())
        link = Link(
            MqttConfig(port=port),
            Topics("appliance", "bench"),
            dict,
            Drainer(outbox, outbox_config, SystemClock()),
        )
        link.start()
        deadline = time.monotonic() + 10
        while not link.stats.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        times, statuses = [], []
        for i in range(samples):
            start = time.perf_counter()
            outbox.add(message_for(queries[i % len(queries)], catalog.info))
            reply = link.incoming.get(timeout=5)
            times.append((time.perf_counter() - start) * 1e3)
            statuses.append(str(json.loads(reply.payload).get("status")))
            time.sleep(0.02)  # objects arrive a few per second, not back to back
        link.stop()
        outbox.close()
        stop.set()
        thread.join(5)
    return {
        "samples": samples,
        "catalog_items": len(vectors),
        "dim": int(vectors.shape[1]),
        "index": index.kind,
        "statuses": dict(Counter(statuses)),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }

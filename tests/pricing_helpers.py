"""The real pricing service on its own thread, for tests that need it beside a daemon or a device."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pricing.catalogs import load_catalogs
from pricing.config import ServiceConfig
from pricing.service import PricingService


@contextmanager
def running_service(config: ServiceConfig) -> Iterator[PricingService]:
    """The service on the config's catalogs, connected and subscribed before the body runs; stopped
    (its offline status published) after it."""
    service = PricingService(config, load_catalogs(config))
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), f"the pricing service {config.instance} did not connect"
        yield service
    finally:
        stop.set()
        thread.join(5)

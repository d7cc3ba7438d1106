"""An HTTP server on a free loopback port, on its own thread: the OTA benchmark's repository and the
tests' faulty servers alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[..., BaseHTTPRequestHandler]


@contextmanager
def serving(handler: Handler, on_exit: Callable[[], Any] | None = None) -> Iterator[str]:
    """Serve with `handler` (a class, or a partial of one) until the block ends; yields the base URL.
    `on_exit` runs before the shutdown (e.g. to release a handler that is holding a response back)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if on_exit is not None:
            on_exit()
        server.shutdown()
        server.server_close()

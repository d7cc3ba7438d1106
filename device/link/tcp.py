"""Socket options for MQTT connections."""

from __future__ import annotations

import socket
from typing import Any


def disable_nagle(_client: Any, _userdata: Any, sock: Any) -> None:
    """paho's on_socket_open hook: set TCP_NODELAY.

    MQTT sends small packets and waits for small answers. With Nagle's algorithm on, a PUBLISH written
    while the previous one is still unacknowledged waits for the peer's delayed ACK: 40 ms on Linux,
    which here was the whole of the quote round trip. paho does not set it, so we do.
    """
    if isinstance(sock, socket.socket):  # a plain or TLS socket; WebSocket wrappers expose none
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""The one MQTT client builder, for the device's link and the pricing service alike.

Both sides want the same client: MQTT v5, guarded against PUBLISH packets paho cannot parse
(device/link/guarded.py), Nagle off (device/link/tcp.py), a retained last will, and credentials and TLS
files checked before they are used, with an error that names the setting to fix. `where` is how the
caller's config spells its MQTT settings ("mqtt." in the appliance's config, "" in the pricing
service's), so the error names the key the person has to edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from device.errors import LinkError
from device.link.guarded import GuardedClient
from device.link.tcp import disable_nagle


@dataclass(frozen=True)
class Security:
    username: str | None = None
    password_file: Path | None = None  # the password lives in its own file, never in a config or log
    tls: bool = False  # also implied by any of the files below
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    properties: Properties | None = None


def make_client(client_id: str, security: Security, will: Will | None, where: str = "mqtt.") -> GuardedClient:
    """A configured, unconnected client. LinkError for a password or TLS file that cannot be used.
    `will` None: a short-lived operator tool (`appliance fleet bench`) has no status to leave behind."""
    client = GuardedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_socket_open = disable_nagle
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True, properties=will.properties)
    if security.username is not None:
        client.username_pw_set(security.username, read_secret(security.password_file, where))
    if security.tls or security.ca_file or security.cert_file:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(security, name)
            if path is not None and not Path(path).is_file():
                raise LinkError(f"{where}{name} = {path} does not exist or is not a file")
        if (security.cert_file is None) != (security.key_file is None):
            raise LinkError(f"{where}cert_file and {where}key_file go together: set both or neither")
        client.tls_set(
            ca_certs=_str(security.ca_file),
            certfile=_str(security.cert_file),
            keyfile=_str(security.key_file),
        )
    return client


def read_secret(path: Path | None, where: str = "mqtt.") -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise LinkError(f"{where}password_file {path} cannot be read: {why}") from None


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)

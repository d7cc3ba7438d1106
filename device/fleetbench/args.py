"""`appliance fleet bench`'s flags, apart from the command so that building the parser loads no paho,
no SQLite and no LiteRT (every `appliance` command builds the whole parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from device.fleetbench.request import DEFAULT_RUNS, MAX_RUNS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", required=True, help="device ids to bench, a shell pattern: 'shop-*'")
    p.add_argument("--models", nargs="+", metavar="ID", help="manifest ids (default: each device's active)")
    p.add_argument("--threads", type=int, help="LiteRT threads (default: each device's runtime.num_threads)")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed invokes per model, 1..{MAX_RUNS}")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the replies")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bench-db", type=Path, help="results database (default: <state_dir>/bench.sqlite)")
    p.add_argument("--host", help="broker (default: mqtt.host from the config)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port)")
    p.add_argument("--topic-prefix", help="default: mqtt.topic_prefix")
    p.add_argument("--username", help="default: mqtt.username")
    p.add_argument("--password-file", type=Path, help="default: mqtt.password_file")
    p.add_argument("--tls", action="store_true", default=None, help="default: mqtt.tls")
    p.add_argument("--ca-file", type=Path, help="default: mqtt.ca_file")
    p.add_argument("--cert-file", type=Path, help="the operator's certificate (default: mqtt.cert_file)")
    p.add_argument("--key-file", type=Path, help="default: mqtt.key_file")

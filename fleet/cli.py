"""`fleet-exporter`: run (MQTT -> /metrics) and bench (its CPU per message and memory per device)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from device.cli_main import run_main

OVERRIDES = (
    "host",
    "port",
    "topic_prefix",
    "username",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "listen_host",
    "listen_port",
    "drop_after_s",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet-exporter", description=__doc__)
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="serve the fleet's status and stats as Prometheus metrics")
    run.add_argument("--config", type=Path, help="TOML with the keys of fleet/config.py")
    for name in ("host", "topic-prefix", "username", "listen-host"):
        run.add_argument(f"--{name}")
    for name in ("password-file", "ca-file", "cert-file", "key-file"):
        run.add_argument(f"--{name}", type=Path)
    run.add_argument("--port", type=int)
    run.add_argument("--listen-port", type=int)
    run.add_argument("--drop-after-s", type=float)
    bench = sub.add_parser("bench", help="CPU per stats message and memory per device, at fleet scale")
    bench.add_argument("--devices", type=int, default=10_000)
    bench.add_argument("--interval-s", type=float, default=10.0, help="how often each device reports")
    bench.add_argument("--json", action="store_true")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "bench":
        from fleet.bench import bench

        return bench(args.devices, args.interval_s, args.json)
    from fleet.config import load_exporter_config
    from fleet.exporter import Exporter

    config = load_exporter_config(args.config, {k: getattr(args, k) for k in OVERRIDES})
    exporter = Exporter(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    exporter.run(stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("fleet-exporter", build_parser().parse_args(argv), dispatch)

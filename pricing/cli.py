"""`pricing-service`: run the service, build catalogs, benchmark."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from device.cli_main import run_main
from device.config import DEFAULT_MODELS_DIR
from device.errors import ApplianceError
from device.image_header import DEFAULT_MAX_PIXELS  # pure Python: `--help` does not load cv2

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("pricing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pricing-service", description="reference pricing service")
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="answer the devices' object messages with quotes")
    run.add_argument("--config", type=Path, help="TOML with the keys of pricing/config.py")
    run.add_argument(
        "--catalog",
        action="append",
        help="a catalog file; repeat for one per embedder version the fleet runs",
    )
    for flag in ("host", "instance", "index", "share-group", "topic-prefix"):
        run.add_argument(f"--{flag}")
    run.add_argument("--port", type=int)
    run.add_argument("--k", type=int)
    run.add_argument("--min-similarity", type=float)
    run.add_argument("--min-neighbours", type=int)
    run.add_argument("--stats-interval-s", type=float)
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: off)")

    catalog = sub.add_parser("catalog", help="catalog tools").add_subparsers(dest="action", required=True)
    build = catalog.add_parser("build", help="embed the images a CSV lists into a catalog file")
    build.add_argument("csv", type=Path)
    build.add_argument("--out", type=Path, default=Path("catalog.sqlite"))
    build.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse item photos that declare more pixels (checked before decoding)",
    )
    demo = catalog.add_parser("demo", help="the demo catalog from the bundled photos (synthetic prices)")
    demo.add_argument("--out", type=Path, default=ROOT / ".demo-state" / "catalog.sqlite")
    for p in (build, demo):
        p.add_argument("--manifest", type=Path, default=DEFAULT_MODELS_DIR / "manifest.toml")
        p.add_argument("--embedder", default="efficientnet-lite0-int8")
    demo.add_argument("--detector", default="centernet-coco-float")

    bench = sub.add_parser("bench", help="index build, query latency, recall; quote latency end to end")
    bench.add_argument(
        "what",
        nargs="?",
        choices=["index", "fuzz"],
        default="index",
        help="index (default): the index and the quote round trip; fuzz: one hostile device's attack",
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--attacks", type=int, default=22_000, help="fuzz: corpus messages")
    bench.add_argument("--sparse", type=int, default=50_000, help="fuzz: scattered-seq messages after them")
    bench.add_argument(
        "--blocks", type=int, default=6, help="fuzz: paced attack blocks of 2 s, each beside a quiet one"
    )
    bench.add_argument(
        "--rate", type=float, default=1000.0, help="fuzz: the paced attack's messages per second"
    )
    bench.add_argument("--items", type=int, default=1_000_000)
    bench.add_argument(
        "--dims", default=str(1280), help="vector sizes, comma-separated (default: what devices send)"
    )
    bench.add_argument("--queries", type=int, default=200, help="queries per kind for recall and latency")
    bench.add_argument(
        "--exact-queries", type=int, default=50, help="exact searches behind the speed-up (at least 50)"
    )
    bench.add_argument(
        "--indexes", default="hnsw", help="index kinds to measure, comma-separated: hnsw, hnsw-int8"
    )
    bench.add_argument(
        "--scan", action="store_true", help="also measure the hnsw index at other search widths"
    )
    bench.add_argument(
        "--catalog",
        type=Path,
        help="measure on this catalog instead of a synthetic one: held-out items are the queries",
    )
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "catalog":
        from pricing.build import build_demo, build_from_csv, load_embedder

        if args.action == "demo":
            count = build_demo(ROOT / "demo", args.out, args.manifest, args.embedder, args.detector)
        else:
            embedder = load_embedder(args.manifest, args.embedder)
            count = build_from_csv(args.csv, args.out, embedder, args.max_image_pixels)
        print(f"{args.out}: {count} items")
        return 0
    if args.command == "bench" and args.what == "fuzz":
        from pricing.bench_fuzz import bench_fuzz

        return bench_fuzz(args.attacks, args.sparse, args.rate, args.json, args.blocks)
    if args.command == "bench":
        from pricing.bench import bench

        dims = [int(d) for d in args.dims.split(",")]
        kinds = args.indexes.split(",")
        return bench(
            args.items,
            dims,
            queries=args.queries,
            exact_queries=args.exact_queries,
            kinds=kinds,
            as_json=args.json,
            scan=args.scan,
            catalog=args.catalog,
        )
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pricing.catalogs import load_catalogs
    from pricing.config import load_service_config
    from pricing.service import PricingService

    overrides = {
        k.replace("-", "_"): getattr(args, k.replace("-", "_"))
        for k in (
            "catalog",
            "host",
            "port",
            "instance",
            "index",
            "share-group",
            "topic-prefix",
            "k",
            "min-similarity",
            "min-neighbours",
            "stats-interval-s",
            "metrics-port",
        )
    }
    config = load_service_config(args.config, overrides)
    service = PricingService(config, load_catalogs(config))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    # SIGHUP (`systemctl reload pricing`): read the config's catalog list again and load it beside the
    # running set, on its own thread; quotes keep flowing from the old set until the new one is ready.
    def reload() -> None:
        try:
            fresh = load_service_config(args.config, overrides).model_copy(update={"index": config.index})
            service.reload(load_catalogs(fresh))
        except ApplianceError as exc:
            log.error("reload refused, still serving the catalogs loaded before: %s", exc)

    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, daemon=True).start())
    service.run(stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("pricing-service", build_parser().parse_args(argv), dispatch)

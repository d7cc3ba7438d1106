"""The `appliance` command line. Parses, sets up logging, dispatches, and turns errors into exit codes.

An ApplianceError prints one line (what went wrong and what to do) and exits with its code; the
traceback appears only with --debug, because operators read these messages, not stack traces.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from device import __version__
from device.cli_main import run_main
from device.fleetbench.args import add_arguments as fleet_bench_arguments
from device.kinds import MODEL_KINDS

if TYPE_CHECKING:
    from device.commands.context import Context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Edge-AI appliance firmware")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    parser.add_argument("--config", help="config TOML (default: $APPLIANCE_CONFIG, else built-in)")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the appliance daemon")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--live", action="store_true", help="print one line per object and per quote")

    p = sub.add_parser("wire", help="object message tools")
    wire_sub = p.add_subparsers(dest="wire_command", required=True, metavar="ACTION")
    decode = wire_sub.add_parser("decode", help="decode one object message from stdin to JSON")
    decode.add_argument("--brief", action="store_true", help="show only the first 8 vector values")

    p = sub.add_parser("detect", help="detect objects in image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", help="detector model id from the manifest (default: config)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("embed", help="embed image files and print pairwise cosines")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("tpus", help="list Edge TPUs (USB and PCIe) from sysfs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)

    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file (exit 0, or 78 if invalid)")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")

    p = sub.add_parser("ota", help="signed model updates: check, status, rollback, pin")
    p.add_argument("action", choices=["check", "status", "rollback", "pin"])
    p.add_argument("kind", nargs="?", choices=list(MODEL_KINDS), help="for rollback and pin")
    p.add_argument("version", nargs="?", help="for pin: the version (leave out to clear the pin)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("http", help="live-view tools")
    http_sub = p.add_subparsers(dest="http_command", required=True, metavar="ACTION")
    http_sub.add_parser(
        "hash-token", help="read a live-view token on stdin, print the [http] token_hash line for it"
    )

    _add_models(sub.add_parser("models", help="model accuracy on a dataset, and the model report"))
    _add_bench(sub.add_parser("bench", help="benchmarks"))
    _add_fleet(sub.add_parser("fleet", help="fleet tools: the model benchmark across devices"))
    return parser


def _add_models(p: argparse.ArgumentParser) -> None:
    models_sub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ev = models_sub.add_parser(
        "eval", help="COCO mAP/AR of the detectors, or retrieval recall of the embedders, on a dataset"
    )
    ev.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="COCO folder (images/ + annotations.json): the detectors; class/image folders: the embedders",
    )
    ev.add_argument("--models", nargs="+", metavar="ID", help="manifest ids (default: all of that kind)")
    ev.add_argument("--json", action="store_true")
    report = models_sub.add_parser("report", help="one HTML page: size, accuracy and latency per model")
    report.add_argument("--dataset", type=Path, required=True, help="COCO folder for the detectors")
    report.add_argument("--retrieval", type=Path, help="class/image folders for the embedders' recall")
    report.add_argument(
        "--bench-db", type=Path, help="fleet bench results (default: <state_dir>/bench.sqlite if it exists)"
    )
    report.add_argument("--out", type=Path, required=True, help="directory for index.html and the charts")
    report.add_argument("--models", nargs="+", metavar="ID", help="manifest ids (default: all)")


def _add_fleet(p: argparse.ArgumentParser) -> None:
    fleet_sub = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    bench = fleet_sub.add_parser("bench", help="cmd/bench on the matched devices; figures per device kind")
    fleet_bench_arguments(bench)


def _add_bench(p: argparse.ArgumentParser) -> None:
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    models = bench_sub.add_parser("models", help="per-model invoke, preprocess and decode latency")
    models.add_argument("--json", action="store_true")
    models.add_argument("--iterations", type=int, default=100)
    models.add_argument(
        "--models", type=lambda text: text.split(","), help="model ids, comma-separated (default: all)"
    )
    thermal = bench_sub.add_parser("thermal", help="the governor against a simulated Pi 4, one hour")
    thermal.add_argument("--json", action="store_true")
    thermal.add_argument("--trace", type=Path, help="CSV seconds,ambient_c to run as an extra scenario")
    outbox = bench_sub.add_parser("outbox", help="durable publishing against plain paho; backlog drain")
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument("--messages", type=int, default=20_000)
    outbox.add_argument("--backlog", type=int, default=100_000)
    ota = bench_sub.add_parser("ota", help="verified download vs plain GET; a whole check; swap frame gap")
    ota.add_argument("--json", action="store_true")
    ota.add_argument("--rounds", type=int, default=6)
    ota.add_argument("--swap-frames", type=int, default=90, help="frames per swap run, at 15 fps (>= 30)")
    pipeline = bench_sub.add_parser(
        "pipeline", help="pipeline fps against the bare interpreters, side by side"
    )
    pipeline.add_argument("--json", action="store_true")
    pipeline.add_argument("--frames", type=int, default=240, help="frames per run (the demo sequence)")
    pipeline.add_argument(
        "--soak-seconds", type=float, default=0.0, help="also run paced this long; report RSS"
    )
    loop = bench_sub.add_parser("loop", help="the daemon's frame loop: non-inference ms per frame")
    loop.add_argument("--json", action="store_true")
    loop.add_argument("--seconds", type=float, default=60.0, help="how long the daemon runs")


def dispatch(args: argparse.Namespace) -> int:
    # Imports are local so that `appliance tpus`, `config check` and `wire decode` start in a blink,
    # without loading LiteRT and OpenCV.
    if args.command == "tpus":
        from device.commands.system import tpus

        return tpus(args.sysfs_root, args.json)
    if args.command == "config":
        from device.commands.system import config_check

        return config_check(args.file, args.json)
    if args.command == "ota":
        # Start-up is most of a check that finds nothing new, which a fleet runs every few minutes
        # (docs/benchmarks.md, "Model updates"). Its imports make some 40,000 long-lived objects that the
        # cycle collector would scan again and again while they load and once more at exit: none of
        # them is garbage, so they are frozen out of its sight (about 80 ms of 0.35 s). Collection is
        # back on for the check itself.
        gc.disable()
        from device.commands.ota import ota

        gc.freeze()
        gc.enable()
        return ota(args.config, args.action, args.kind, args.version, args.json)
    if args.command == "wire":
        from device.commands.wire_decode import wire_decode

        return wire_decode(args.brief)
    if args.command == "http":
        from device.live.auth import hash_token_command

        return hash_token_command()
    return _dispatch_models(args) if args.command == "models" else _dispatch_vision(args)


def _dispatch_models(args: argparse.Namespace) -> int:
    from device.commands.context import build_context

    ctx = build_context(args.config)
    if args.models_command == "eval":
        from device.commands.models_eval import models_eval

        return models_eval(ctx, args.dataset, args.models, args.json)
    from device.commands.models_report import models_report

    return models_report(
        ctx,
        dataset=args.dataset,
        retrieval=args.retrieval,
        bench_db=args.bench_db,
        out=args.out,
        model_ids=args.models,
    )


def _dispatch_vision(args: argparse.Namespace) -> int:
    standalone = ("thermal", "outbox", "ota")
    if args.command == "fleet" or (args.command == "bench" and args.bench_command in standalone):
        return _dispatch_standalone_bench(args)
    if args.command == "run":
        from device.commands.run import run

        return run(args.config, args.duration, args.live, args.debug)
    from device.commands.context import build_context
    from device.commands.vision import detect, embed

    ctx = build_context(args.config)
    if args.command == "detect":
        return detect(ctx, args.images, args.model, args.json)
    if args.command == "embed":
        return embed(ctx, args.images, args.json)
    return _dispatch_model_bench(ctx, args)


def _dispatch_model_bench(ctx: Context, args: argparse.Namespace) -> int:
    """Benchmarks that load the configured models."""
    if args.bench_command == "loop":
        from device.commands.bench_loop import bench_loop

        return bench_loop(ctx.config, args.seconds, args.json)
    if args.bench_command == "pipeline":
        from device.commands.bench_pipeline import bench_pipeline

        return bench_pipeline(ctx, args.frames, args.soak_seconds, args.json)
    from device.commands.bench_models import bench_models

    return bench_models(ctx, args.iterations, args.json, args.models)


def _dispatch_standalone_bench(args: argparse.Namespace) -> int:
    """Benchmarks that load no models here (`fleet bench` runs them on the devices)."""
    if args.command == "fleet":
        from device.commands.fleet_bench import fleet_bench

        return fleet_bench(args.config, args)
    if args.bench_command == "ota":
        from device.commands.bench_ota import bench_ota

        return bench_ota(args.rounds, args.json, args.swap_frames)
    if args.bench_command == "thermal":
        from device.commands.bench_thermal import bench_thermal

        return bench_thermal(args.trace, args.json)
    from device.commands.bench_outbox import bench_outbox

    return bench_outbox(args.messages, args.backlog, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("appliance", build_parser().parse_args(argv), dispatch)

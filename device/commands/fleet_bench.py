"""`appliance fleet bench`: the model benchmark on every matched device, per device kind and model.

The broker and the operator's credentials come from the config's [mqtt] section (the same keys as
the device's: host, port, topic_prefix, username, password_file, tls, ca_file, cert_file, key_file),
each overridable by a flag. Results go into the bench database, and each figure is printed with its
change against the previous run of the same device kind, accelerator, back end, model and threads.

Exit status: 0 when every matched device answered; 69 (EX_UNAVAILABLE) when one did not (offline,
no reply in time, busy, failed) or when no device matched.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from device.commands.context import config_path
from device.config import Config, load_config
from device.errors import EX_UNAVAILABLE, EX_USAGE
from device.fleetbench.client import BenchAsk, Broker, Outcome, device_results, run_bench
from device.fleetbench.request import MAX_RUNS
from device.fleetbench.results import KindFigures, previous_figures, record, run_figures
from device.link.client import Security


def broker_of(config: Config, args: argparse.Namespace) -> Broker:
    mqtt = config.mqtt

    def pick(flag: str) -> Any:
        value = getattr(args, flag)
        return value if value is not None else getattr(mqtt, flag)

    security = Security(
        pick("username"),
        pick("password_file"),
        bool(pick("tls")),
        pick("ca_file"),
        pick("cert_file"),
        pick("key_file"),
    )
    return Broker(pick("host"), pick("port"), pick("topic_prefix"), security)


def fleet_bench(explicit_config: str | None, args: argparse.Namespace) -> int:
    if not 1 <= args.runs <= MAX_RUNS:
        print(f"appliance: error: --runs {args.runs} is not within 1..{MAX_RUNS}", file=sys.stderr)
        return EX_USAGE
    if args.threads is not None and args.threads < 1:
        print(f"appliance: error: --threads {args.threads} must be at least 1", file=sys.stderr)
        return EX_USAGE
    config = load_config(config_path(explicit_config))
    ask = BenchAsk(tuple(args.models) if args.models else None, args.threads, args.runs)
    outcome = run_bench(broker_of(config, args), args.devices, ask, args.timeout)
    db = args.bench_db or config.state_dir / "bench.sqlite"
    record(db, device_results(outcome))
    figures = run_figures(db, outcome.request_id)
    previous = previous_figures(db, outcome.request_id)
    report = _report(outcome, figures, previous, db)
    print(json.dumps(report, indent=2) if args.json else _text(report, args.devices))
    return 0 if outcome.complete else EX_UNAVAILABLE


def _report(
    outcome: Outcome, figures: list[KindFigures], previous: dict[Any, KindFigures], db: Path
) -> dict[str, Any]:
    rows = []
    for f in figures:
        before = previous.get(f.key)
        change = None
        if before is not None:
            change = {
                "p50_ms": before.p50_ms,
                "fps": before.fps,
                "p50_change_pct": round((f.p50_ms / before.p50_ms - 1) * 100, 1) if before.p50_ms else None,
                "at": before.at,
            }
        rows.append({**asdict(f), "previous": change})
    return {
        "request_id": outcome.request_id,
        "matched": outcome.matched,
        "answered": sorted(outcome.results),
        "not_answering": dict(sorted(outcome.missing.items())),
        "figures": rows,
        "bench_db": str(db),
        "results": outcome.results,
    }


def _text(report: dict[str, Any], pattern: str) -> str:
    matched, answered = report["matched"], report["answered"]
    lines = [
        f"fleet bench {report['request_id']}: {len(answered)} of {len(matched)} devices matching "
        f"{pattern!r} answered"
    ]
    if report["figures"]:
        lines.append(
            f"{'device kind':<40} {'accelerator':<12} {'backend':<19} {'model':<28} thr "
            f"{'p50 ms':>8} {'p90 ms':>8} {'fps':>8} devices  vs previous p50"
        )
    for f in report["figures"]:
        before = f["previous"]
        change = (
            "first run"
            if before is None
            else f"{before['p50_change_pct']:+.1f}% (was {before['p50_ms']:.2f})"
        )
        figures = f"{f['p50_ms']:>8.2f} {f['p90_ms']:>8.2f} {f['fps']:>8.1f} {f['devices']:>7}"
        lines.append(
            f"{f['device_kind'][:40]:<40} {f['accelerator']:<12} {f['backend']:<19} {f['model']:<28} "
            f"{f['threads']:>3} {figures}  {change}"
        )
    if not matched:
        lines.append(f"no device's status matches {pattern!r}: check --devices and --topic-prefix")
    for device, why in report["not_answering"].items():
        lines.append(f"NOT ANSWERING {device}: {why}")
    lines.append(f"results kept in {report['bench_db']}")
    return "\n".join(lines)

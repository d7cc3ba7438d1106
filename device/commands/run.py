"""`appliance run`: the daemon. With --live, one line per object and per quote on stdout."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from device.app import App, Observers
from device.commands.context import config_path
from device.config import load_config
from device.wire import ObjectMessage, encode


def run(explicit_config: str | None, duration: float | None, live: bool, debug: bool) -> int:
    config = load_config(config_path(explicit_config))
    logging.getLogger().setLevel(logging.DEBUG if debug else config.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    observers = Observers(print_object, print_quote, print_stats) if live else Observers()
    App(config, observers=observers).run(stop, duration)
    return 0


def print_object(message: ObjectMessage) -> None:
    box = ", ".join(f"{v:.2f}" for v in message.box)
    _line(
        f"object seq={message.seq:<6} track={message.track_id:<4} {message.label:<14} "
        f"{message.score:.2f}  box=[{box}]  {message.dim}-d, {len(encode(message))} B"
    )


def print_quote(quote: dict[str, Any]) -> None:
    if quote.get("status", "ok") != "ok":
        _line(
            f"quote  seq={quote.get('seq', '?'):<6} track={quote.get('track_id', '?'):<4} "
            f"{str(quote.get('status', '')).replace('_', ' ')}: {quote.get('reason', '')}"
        )
        return
    currency = quote.get("currency", "")
    avg, median = quote.get("avg_sold_price"), quote.get("median_sold_price")
    through, trip = quote.get("sell_through"), quote.get("round_trip_ms", "?")
    _line(
        f"quote  seq={quote.get('seq', '?'):<6} track={quote.get('track_id', '?'):<4} "
        f"avg {_money(avg)} {currency}, median {_money(median)} {currency}, "
        f"sell-through {_percent(through)} (n={quote.get('n')}; round trip {trip} ms)"
    )


def print_stats(stats: dict[str, Any]) -> None:
    """One line per stats interval, so an outage shows the backlog growing, then draining."""
    fps, box = stats["fps"], stats["outbox"]
    drops = sum(box["drops"].values())
    link = "up" if stats["link"]["connected"] else "DOWN"
    _line(
        f"stats  {fps['processed']:.1f} fps (detector {fps['detected']:.1f}, skipped {fps['skipped']:.1f}) | "
        f"outbox {box['depth']} msgs, {box['bytes'] / 1024:.0f} KB, oldest {box['oldest_age_s']:.0f} s, "
        f"draining {box['drain_rate_per_s']:.0f}/s, drops {drops} | link {link} | "
        f"CPU {_celsius(stats['temperatures']['cpu_c'])} | pace {stats['pace']['reason']}"
    )


def _celsius(value: Any) -> str:
    return f"{value:.1f} °C" if isinstance(value, int | float) else str(value)


def _money(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def _percent(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, int | float) else "-"


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

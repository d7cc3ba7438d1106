"""One rate-limited log line for events that are counted: the 1st, 2nd, 4th, 8th ... of a kind.

A flood of one kind (a full disk at 15 messages a second, a hostile device's 10,000 bad messages) costs
a few lines in the journal instead of one per event, and every line carries the running count, which
the stats also report.
"""

from __future__ import annotations

import logging


def log_rarely(logger: logging.Logger, level: int, count: int, message: str, exc_info: bool = False) -> None:
    """Log `message` with `count` when `count` is a power of two (with the traceback, if asked)."""
    if count > 0 and count & (count - 1) == 0:
        logger.log(level, "%s (%d so far)", message, count, exc_info=exc_info)

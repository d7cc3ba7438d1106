"""`cmd/bench`: the request a device takes, validated like every other command, and the reply's version.

The payload is untrusted input (anyone who may write `<prefix>/<id>/cmd/#` can send it): its shape is
checked by pydantic, then the model ids against the device's own manifest and the thread count against
its own CPUs, because only the device knows those. docs/topics.md documents both directions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The version of the `<prefix>/<id>/bench` reply's JSON (docs/topics.md). A change that removes or
# renames a field bumps it; readers refuse versions they do not know.
REPLY_VERSION = 1
# One invoke of the slowest model here on a Pi 4's CPU takes about 0.3 s: 1000 runs is five minutes of
# a paused pipeline, the most an operator should be able to ask for by mistake.
MAX_RUNS = 1000
DEFAULT_RUNS = 50
REQUEST_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(pattern=REQUEST_ID)
    models: list[str] | None = Field(default=None, min_length=1, max_length=16)
    threads: int | None = Field(default=None, ge=1)
    runs: int = Field(default=DEFAULT_RUNS, ge=1, le=MAX_RUNS)


@dataclass(frozen=True)
class BenchRequest:
    request_id: str
    models: tuple[str, ...]
    threads: int
    runs: int


class BadRequestError(ValueError):
    """What is wrong with a cmd/bench payload, in one line for the device's log."""


def parse_request(
    payload: bytes, known: frozenset[str], active: tuple[str, ...], default_threads: int
) -> BenchRequest:
    """The request, with defaults filled in (the active models, the config's thread count).

    `known`: the model ids in the device's manifest. BadRequestError says what was wrong."""
    try:
        raw = _Payload.model_validate_json(payload or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise BadRequestError(f"{where}: {first['msg']}") from None
    models = tuple(dict.fromkeys(raw.models)) if raw.models is not None else active
    unknown = [m for m in models if m not in known]
    if unknown:
        raise BadRequestError(f"models: {', '.join(unknown)} not in this device's manifest")
    cores = os.cpu_count() or 1
    threads = raw.threads if raw.threads is not None else min(default_threads, cores)
    if threads > cores:
        raise BadRequestError(f"threads: {threads} is more than this device's {cores} CPUs")
    return BenchRequest(raw.request_id, models, threads, raw.runs)

"""Commands from the broker (`cmd/pace`, `cmd/pause`, `cmd/resume`, `cmd/ota-check`, `cmd/ota-rollback`,
`cmd/ota-pin`, `cmd/bench`), quotes, and the fleet's release notice.

Payloads are untrusted input: each is validated, and anything malformed is ignored with one WARNING
that says what was wrong, never an exception in the control loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.kinds import Kind
from device.link.mqtt import Incoming
from device.link.topics import Topics
from device.pace import DEFAULT_OVERRIDE_S, PaceController

log = logging.getLogger(__name__)


_Command = TypeVar("_Command", bound=BaseModel)


class PaceCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detect_every: int | None = Field(default=None, ge=1, le=60)
    max_fps: float | None = Field(default=None, ge=0.0, le=120.0)
    embed_budget_per_s: float | None = Field(default=None, ge=0.0, le=1000.0)
    expires_s: float = Field(default=DEFAULT_OVERRIDE_S, gt=0.0, le=86_400.0)


class OtaCommand(BaseModel):
    """`cmd/ota-rollback` {"kind": ...} and `cmd/ota-pin` {"kind": ..., "version": "1.2.0" or null}."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    version: str | None = Field(default=None, pattern=r"^\d+\.\d+\.\d+$")


class Control:
    def __init__(
        self,
        topics: Topics,
        pace: PaceController,
        on_quote: Callable[[dict[str, Any]], None] | None = None,
        on_ota_check: Callable[[str], None] | None = None,
        on_ota_command: Callable[[str, OtaCommand], None] | None = None,
        *,
        on_bench: Callable[[bytes], None] | None = None,
    ) -> None:
        """`on_bench` validates its own payloads (device/fleetbench/): only the device knows which
        models and how many CPUs it has."""
        self.topics = topics
        self.on_ota_check = on_ota_check
        self.on_ota_command = on_ota_command
        self.on_bench = on_bench
        self.pace = pace
        self.on_quote = on_quote
        self.rejected = 0
        self.quotes = 0

    def handle(self, message: Incoming) -> None:
        if message.topic == self.topics.quotes:
            self._quote(message)
            return
        if message.topic == self.topics.fleet_release:
            # Only a hint to check now: what to install comes from the signed metadata, never from here.
            self._ota_check("retained fleet release notice")
            return
        name = self.topics.command_name(message.topic)
        if name == "pace":
            self._pace(message.payload)
        elif name in ("pause", "resume"):
            self.pace.set_paused(name == "pause")
            log.info("%s by operator command", "paused" if name == "pause" else "resumed")
        elif name == "ota-check":
            self._ota_check("operator command cmd/ota-check")
        elif name in ("ota-rollback", "ota-pin"):
            self._ota_command(name, message.payload)
        elif name == "bench" and self.on_bench is not None:
            self.on_bench(message.payload)
        else:
            self._reject(message.topic, "unknown command")

    def _ota_check(self, why: str) -> None:
        if self.on_ota_check is not None:
            self.on_ota_check(why)

    def _parse(self, model: type[_Command], name: str, payload: bytes) -> _Command | None:
        """The command's payload, validated; None (and one WARNING saying what is wrong) if it is not."""
        try:
            return model.model_validate_json(payload or b"{}")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            self._reject(self.topics.command(name), f"{where}: {first['msg']}")
            return None

    def _ota_command(self, name: str, payload: bytes) -> None:
        command = self._parse(OtaCommand, name, payload)
        if command is not None and self.on_ota_command is not None:
            self.on_ota_command(name.removeprefix("ota-"), command)

    def _pace(self, payload: bytes) -> None:
        command = self._parse(PaceCommand, "pace", payload)
        if command is None:
            return
        self.pace.override(
            command.detect_every, command.max_fps, command.embed_budget_per_s, command.expires_s
        )
        log.info("pace override for %.0f s: %s", command.expires_s, command.model_dump(exclude_none=True))

    def _quote(self, message: Incoming) -> None:
        try:
            quote = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._reject(message.topic, "quote is not JSON")
            return
        if not isinstance(quote, dict):
            self._reject(message.topic, "quote is not a JSON object")
            return
        self.quotes += 1
        if self.on_quote is not None:
            self.on_quote(quote)

    def _reject(self, topic: str, why: str) -> None:
        self.rejected += 1
        log.warning("ignored malformed message on %s: %s", topic, why)

"""Topic names, in one place. docs/topics.md is the contract for subscribers."""

from __future__ import annotations

from dataclasses import dataclass

COMMANDS = ("pace", "pause", "resume", "ota-check", "ota-rollback", "ota-pin", "bench")


@dataclass(frozen=True)
class Topics:
    prefix: str
    device_id: str

    def _device(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device_id}/{leaf}"

    @property
    def status(self) -> str:
        return self._device("status")

    @property
    def objects(self) -> str:
        return self._device("objects")

    @property
    def quotes(self) -> str:
        return self._device("quotes")

    @property
    def stats(self) -> str:
        return self._device("stats")

    @property
    def bench(self) -> str:
        """`cmd/bench`'s results (device/fleetbench/runner.py)."""
        return self._device("bench")

    @property
    def fleet_release(self) -> str:
        """Retained notice of a new model release, for every device (read-only for them in the ACL)."""
        return f"{self.prefix}/fleet/release"

    def command(self, name: str) -> str:
        return self._device(f"cmd/{name}")

    @property
    def commands(self) -> str:
        return self._device("cmd/+")

    def command_name(self, topic: str) -> str | None:
        """`pace` for `<prefix>/<id>/cmd/pace`; None for any other topic."""
        head = self._device("cmd/")
        return topic[len(head) :] if topic.startswith(head) else None

"""Several catalogs, one per embedder version, so that a staged embedder rollout keeps every quote.

While 10% of a fleet runs embedder 1.1.0 and the rest 1.0.0 (docs/ota.md), their vectors live in two
spaces that cannot be compared. The service loads one catalog built with each version and answers every
message from the catalog its embedder made; a version with no catalog is refused with a reason that names
the versions it has.
"""

from __future__ import annotations

from collections.abc import Sequence

from device.wire import ObjectMessage
from pricing.catalog import load_catalog
from pricing.config import ServiceConfig
from pricing.errors import ServiceConfigError
from pricing.pricer import Pricer
from pricing.quote import Quote


class Catalogs:
    def __init__(self, pricers: Sequence[Pricer]) -> None:
        self.pricers: dict[tuple[str, str], Pricer] = {}
        for pricer in pricers:
            key = (pricer.catalog.info.model_id, pricer.catalog.info.model_version)
            if key in self.pricers:
                raise ServiceConfigError(f"two catalogs were built with {key[0]} {key[1]}; give one of them")
            self.pricers[key] = pricer
        if not self.pricers:
            raise ServiceConfigError("give at least one catalog")

    def quote(self, message: ObjectMessage) -> tuple[Quote, Pricer | None]:
        """The quote, and the catalog's pricer that made it (None when refused for want of one)."""
        pricer = self.pricers.get((message.model_id, message.model_version))
        if pricer is None:
            have = ", ".join(f"{m} {v}" for m, v in self.pricers)
            return Quote(
                "refused",
                reason=(
                    f"embedding from {message.model_id} {message.model_version}, but the catalogs here "
                    f"were made with {have}; vectors of different models cannot be compared"
                ),
            ), None
        return pricer.quote(message), pricer

    @property
    def items(self) -> int:
        return sum(len(p.catalog) for p in self.pricers.values())

    @property
    def index_kind(self) -> str:
        return next(iter(self.pricers.values())).index.kind

    def describe(self) -> list[dict[str, object]]:
        return [
            {"model": [m, v], "items": len(p.catalog), "synthetic": p.catalog.info.synthetic}
            for (m, v), p in self.pricers.items()
        ]


def load_catalogs(config: ServiceConfig) -> Catalogs:
    """Every catalog the config names, each with its own index. CatalogError for a bad file."""
    return Catalogs([Pricer(load_catalog(path), config) for path in config.catalog])

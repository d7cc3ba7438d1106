"""The pricing logic without any I/O: one decoded object message in, one quote out."""

from __future__ import annotations

import numpy as np

from device.wire import ObjectMessage
from pricing.catalog import Catalog, normalise_int8
from pricing.config import ServiceConfig
from pricing.index import NeighbourIndex, make_index
from pricing.quote import Neighbour, Quote, make_quote


class Pricer:
    def __init__(self, catalog: Catalog, config: ServiceConfig, index: NeighbourIndex | None = None) -> None:
        self.catalog = catalog
        self.config = config
        self.index = index or make_index(config.index, catalog.vectors)

    def quote(self, message: ObjectMessage) -> Quote:
        info = self.catalog.info
        if (message.model_id, message.model_version) != (info.model_id, info.model_version):
            return Quote(
                "refused",
                reason=(
                    f"embedding from {message.model_id} {message.model_version}, catalog made with "
                    f"{info.model_id} {info.model_version}; vectors of different models cannot be compared"
                ),
            )
        if message.dim != info.dim:
            return Quote("refused", reason=f"vector has {message.dim} values, the catalog {info.dim}")
        query = normalise_int8(
            np.frombuffer(message.vector, dtype=np.int8), message.scale, message.zero_point
        )
        rows, sims = self.index.search(query, self.config.k)
        candidates = [
            Neighbour(
                self.catalog.ids[r],
                float(s),
                float(self.catalog.prices[r]),
                self.catalog.currencies[r],
                bool(self.catalog.sold[r]),
            )
            for r, s in zip(rows.tolist(), sims.tolist(), strict=True)
        ]
        return make_quote(candidates, self.config.min_similarity, self.config.min_neighbours)

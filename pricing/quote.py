"""From the k nearest catalog items to a quote: average and median sold price, sell-through, confidence.

Formulas (only neighbours with similarity >= min_similarity count; w_i is neighbour i's similarity):
- avg_sold_price, median_sold_price: the plain mean and median of the sold neighbours' prices, in the
  currency most of them share (prices in other currencies are left out, never converted).
- sell_through = sum(w_i for sold i) / sum(w_i for all i): the share of similar items that sold, the
  closer ones counting more.
- confidence = mean similarity x (1 - exp(-n_eff / 3)), where n_eff = (sum w_i)^2 / sum(w_i^2) is the
  effective number of neighbours (Kish). It is near 0 for one weak match and approaches the mean
  similarity as more strong matches agree; 3 sets how fast: n_eff = 3 gives 63% of it.
- Fewer than min_neighbours neighbours, or none sold, is an explicit "insufficient_data" answer.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Neighbour:
    id: str
    similarity: float
    price: float
    currency: str
    sold: bool


@dataclass(frozen=True)
class Quote:
    status: str  # "ok", "insufficient_data" or "refused"
    n: int = 0
    avg_sold_price: float | None = None
    median_sold_price: float | None = None
    sell_through: float | None = None
    currency: str | None = None
    confidence: float = 0.0
    neighbours: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


def make_quote(
    candidates: list[Neighbour], min_similarity: float, min_neighbours: int, show: int = 5
) -> Quote:
    near = [c for c in candidates if c.similarity >= min_similarity]
    shown = [
        {
            "id": c.id,
            "similarity": round(c.similarity, 4),
            "sold": c.sold,
            "price": c.price,
            "currency": c.currency,
        }
        for c in near[:show]
    ]
    sold = [c for c in near if c.sold]
    if len(near) < min_neighbours or not sold:
        why = (
            f"{len(near)} similar items (similarity >= {min_similarity}), {len(sold)} sold; "
            f"at least {min_neighbours} similar and 1 sold are needed"
        )
        return Quote("insufficient_data", n=len(near), neighbours=shown, reason=why)
    currency = Counter(c.currency for c in sold).most_common(1)[0][0]
    prices = [c.price for c in sold if c.currency == currency]
    weights = [c.similarity for c in near]
    total = sum(weights)
    through = sum(c.similarity for c in sold) / total
    n_eff = total * total / sum(w * w for w in weights)
    confidence = (total / len(near)) * (1.0 - math.exp(-n_eff / 3.0))
    return Quote(
        "ok",
        n=len(near),
        avg_sold_price=round(statistics.fmean(prices), 2),
        median_sold_price=round(statistics.median(prices), 2),
        sell_through=round(through, 4),
        currency=currency,
        confidence=round(confidence, 4),
        neighbours=shown,
    )

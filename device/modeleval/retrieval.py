"""An embedder on a retrieval folder: leave-one-out recall@k by cosine nearest neighbour.

Each image in turn is the query and every other image the gallery; recall@k is the share of queries
whose k nearest neighbours (cosine of the L2-normalised embeddings, the pricing service's measure)
hold at least one image of the query's class. The whole image is embedded, as `appliance embed` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from device.errors import DatasetError, InputError
from device.images import read_image
from device.modeleval.dataset import RetrievalSet
from device.vision.embedder import Embedder

RECALL_AT = (1, 5)


@dataclass
class RetrievalResult:
    model: str
    images: int
    classes: int
    recall: dict[int, float]  # k -> recall@k
    misses: list[dict[str, str]]  # queries whose nearest neighbour is of another class

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recall": {f"@{k}": v for k, v in self.recall.items()}}


def evaluate_embedder(embedder: Embedder, dataset: RetrievalSet, model_id: str) -> RetrievalResult:
    vectors = []
    for _, path in dataset.items:
        try:
            frame = read_image(path)
        except InputError as exc:
            raise DatasetError(f"{exc}: replace the file or remove it from {dataset.root}") from None
        vectors.append(embedder.embed(frame).vector)
    labels = [label for label, _ in dataset.items]
    recall, nearest = recall_at(np.stack(vectors), labels, RECALL_AT)
    misses = [
        {
            "query": str(dataset.items[q][1].relative_to(dataset.root)),
            "nearest": str(dataset.items[n][1].relative_to(dataset.root)),
        }
        for q, n in enumerate(nearest)
        if labels[n] != labels[q]
    ]
    return RetrievalResult(model_id, len(labels), len(set(labels)), recall, misses)


def recall_at(
    vectors: np.ndarray[Any, np.dtype[np.float32]], labels: list[str], ks: tuple[int, ...]
) -> tuple[dict[int, float], list[int]]:
    """Leave-one-out recall@k for each k, and each query's nearest neighbour (an index)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # a query never finds itself
    order = np.argsort(-similarity, axis=1, kind="stable")
    same = np.asarray(labels)[order] == np.asarray(labels)[:, None]
    # The last column is the query itself (at -inf): never a neighbour.
    recall = {k: round(float(same[:, : min(k, len(labels) - 1)].any(axis=1).mean()), 4) for k in ks}
    return recall, [int(row[0]) for row in order]

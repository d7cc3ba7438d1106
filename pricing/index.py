"""The NeighbourIndex port and its two adapters.

Vectors are unit length, quantised to int8 x127 (catalog.normalise_int8); similarity is their cosine.
- ExactIndex: numpy over all vectors, in blocks. The reference for recall, and fine for small catalogs.
- SignHnswIndex ("hnsw", the default): usearch's HNSW graph over one bit per dimension, then an exact
  re-rank on the int8 vectors; a millisecond at a million 1280-d items.
- HnswIndex ("hnsw-int8"): usearch's HNSW graph over the int8 vectors themselves; slower at 1280-d.
The quote is computed from the similarities these return, which are exact cosines of the int8 vectors
for every adapter: an approximate index may miss a neighbour, never misstate one.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Int8Matrix = npt.NDArray[np.int8]
# Rows converted to float32 per step of the exact search: 16k x 1280 x 4 B = 84 MB of scratch at most.
BLOCK = 16_384


class NeighbourIndex(Protocol):
    kind: str

    def search(
        self, query: npt.NDArray[np.int8], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Row numbers of the k most similar vectors and their cosine similarities, best first."""

    def __len__(self) -> int: ...


def row_norms(vectors: Int8Matrix) -> npt.NDArray[np.float32]:
    """Each row's true length (127 only up to rounding), computed in blocks to bound the scratch."""
    norms = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK].astype(np.float32)
        norms[start : start + BLOCK] = np.linalg.norm(block, axis=1)
    return np.maximum(norms, 1e-6)


def cosines(
    vectors: Int8Matrix, norms: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], query: Int8Matrix
) -> npt.NDArray[np.float32]:
    """The exact cosine of the query with each of `rows`, computed as the exact index does."""
    q = query.astype(np.float32)
    q /= max(float(np.linalg.norm(q)), 1e-6)
    sims: npt.NDArray[np.float32] = (vectors[rows].astype(np.float32) @ q) / norms[rows]
    return sims


class ExactIndex:
    kind = "exact"

    def __init__(self, vectors: Int8Matrix) -> None:
        self.vectors = vectors
        # The true cosine of the int8 vectors, so that near-ties rank the same in every adapter.
        self.norms = row_norms(vectors)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(
        self, query: npt.NDArray[np.int8], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        ids, sims = self.search_many(query[np.newaxis], k)
        return ids[0], sims[0]

    def search_many(
        self, queries: Int8Matrix, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact top-k for a batch of queries (the benchmark's recall reference)."""
        q = queries.astype(np.float32).T
        q = q / np.maximum(np.linalg.norm(q, axis=0), 1e-6)
        best_ids = np.empty((len(queries), 0), dtype=np.int64)
        best_sims = np.empty((len(queries), 0), dtype=np.float32)
        for start in range(0, len(self), BLOCK):
            block = self.vectors[start : start + BLOCK]
            sims = (block.astype(np.float32) @ q).T / self.norms[start : start + BLOCK]
            ids = np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)
            best_ids = np.concatenate([best_ids, ids], axis=1)
            best_sims = np.concatenate([best_sims, sims.astype(np.float32)], axis=1)
            if best_sims.shape[1] > k:
                keep = np.argpartition(-best_sims, k - 1, axis=1)[:, :k]
                best_ids = np.take_along_axis(best_ids, keep, axis=1)
                best_sims = np.take_along_axis(best_sims, keep, axis=1)
        order = np.argsort(-best_sims, axis=1, kind="stable")
        return np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_sims, order, axis=1)


class HnswIndex:
    """usearch HNSW over the int8 vectors with the cosine metric ("hnsw-int8"). connectivity 16 and
    expansion_add 128 are usearch's defaults; expansion_search 256 (usearch: 64) because at 1M x 256
    it lifts recall@20 from 0.96 to 0.999 for typical queries at a p99 of 1.4 ms; at 1M x 1280 it
    gives 0.965 at a p99 of 3.9 ms, which is why "hnsw" is the sign-code index (docs/benchmarks.md)."""

    kind = "hnsw-int8"

    def __init__(
        self,
        vectors: Int8Matrix,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 256,
        threads: int = 0,
    ) -> None:
        from usearch.index import Index  # noqa: PLC0415 - the exact index must work without usearch

        self._index = Index(
            ndim=int(vectors.shape[1]),
            metric="cos",
            dtype="i8",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        if len(vectors):
            self._index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=threads)
        self._size = int(vectors.shape[0])

    def __len__(self) -> int:
        return self._size

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def search(
        self, query: npt.NDArray[np.int8], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        if not self._size:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        found = self._index.search(query, min(k, self._size))
        # usearch reports cosine distance (1 - similarity).
        return np.asarray(found.keys, dtype=np.int64), (1.0 - np.asarray(found.distances)).astype(np.float32)


def make_index(kind: str, vectors: Int8Matrix) -> NeighbourIndex:
    if kind == "hnsw":
        from pricing.sign_index import SignHnswIndex  # noqa: PLC0415 - it builds on this module

        return SignHnswIndex(vectors)
    return HnswIndex(vectors) if kind == "hnsw-int8" else ExactIndex(vectors)

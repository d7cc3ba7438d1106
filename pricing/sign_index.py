"""SignHnswIndex: a million 1280-d vectors searched in about a millisecond, with exact similarities.

Two steps, because HNSW over the int8 vectors themselves costs a 1280-byte dot product per visited node
(1M x 1280: p99 3.9 ms at recall@20 0.965, and a 2.3 GB graph; docs/benchmarks.md):
1. HNSW (usearch) over one bit per dimension: whether the value is above the catalog's mean in that
   dimension. The Hamming distance of two such codes estimates the angle between the centred vectors
   (sign random projections, Charikar 2002), for 160 bytes and a popcount instead of 1280 multiplies.
   Centring on the mean matters for real embeddings, which are all positive (ReLU6 features): uncentred,
   every bit would be 1.
2. The best `candidates` codes are re-ranked on the full int8 vectors with the exact cosine, so the
   neighbours the quote uses and their similarities are exact; only a neighbour outside the candidates
   can be missed, which recall@20 in `pricing-service bench` measures.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pricing.index import BLOCK, Int8Matrix, cosines, row_norms


class SignHnswIndex:
    kind = "hnsw"

    def __init__(
        self,
        vectors: Int8Matrix,
        *,
        candidates: int = 128,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 256,
        threads: int = 0,
    ) -> None:
        """candidates 128 and expansion_search 256 were chosen by a scan at 1M x 1280
        (docs/benchmarks.md): with 256 candidates recall did not move; with 128 the graph's own search
        width, not the re-rank, is what bounds it."""
        from usearch.index import Index  # noqa: PLC0415 - the exact index must work without usearch

        self.vectors = vectors
        self.norms = row_norms(vectors)
        self.candidates = candidates
        dim = int(vectors.shape[1])
        self.mean = (
            vectors.mean(axis=0, dtype=np.float64).astype(np.float32) if len(vectors) else np.zeros(dim)
        )
        self._index = Index(
            ndim=dim,
            metric="hamming",
            dtype="b1",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        for start in range(0, len(vectors), BLOCK):
            block = vectors[start : start + BLOCK]
            keys = np.arange(start, start + len(block), dtype=np.uint64)
            self._index.add(keys, self.codes(block), threads=threads)
        self._size = int(vectors.shape[0])

    def __len__(self) -> int:
        return self._size

    @property
    def memory_bytes(self) -> int:
        """The graph and its codes; the int8 vectors it re-ranks on are the catalog's own."""
        return int(self._index.memory_usage)

    @property
    def search_settings(self) -> tuple[int, int]:
        return self.candidates, int(self._index.expansion_search)

    def set_search(self, candidates: int, expansion_search: int) -> None:
        """Change the search's width without rebuilding the graph (the benchmark's settings scan)."""
        self.candidates = candidates
        # usearch defines a setter for it; mypy reads the property as read-only all the same.
        self._index.expansion_search = expansion_search  # type: ignore[misc]

    def codes(self, vectors: Int8Matrix) -> npt.NDArray[np.uint8]:
        """One bit per dimension, packed: 1 where the value is above the catalog's mean."""
        return np.packbits(vectors > self.mean, axis=1)

    def search(
        self, query: npt.NDArray[np.int8], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        if not self._size:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        wanted = min(max(k, self.candidates), self._size)
        found = self._index.search(self.codes(query[np.newaxis])[0], wanted)
        rows = np.asarray(found.keys, dtype=np.int64)
        sims = cosines(self.vectors, self.norms, rows, query)
        best = np.argsort(-sims, kind="stable")[:k]
        return rows[best], sims[best]

"""The catalog: sold and listed items with their int8 embeddings, in one SQLite file (no server).

The file records which embedder model (id and version) made its vectors. A query made by another model
is refused: vectors from different models live in different spaces and must never be compared.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pricing.errors import CatalogError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    vector BLOB NOT NULL,
    scale REAL NOT NULL,
    zero_point INTEGER NOT NULL,
    price REAL NOT NULL CHECK (price >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sold', 'listed')),
    sold_at TEXT,
    category TEXT
);
"""


@dataclass(frozen=True)
class Item:
    id: str
    vector: bytes  # int8 values
    scale: float
    zero_point: int
    price: float
    currency: str
    status: str  # "sold" or "listed"
    sold_at: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class CatalogInfo:
    model_id: str
    model_version: str
    dim: int
    synthetic: bool  # demo data with made-up prices


@dataclass
class Catalog:
    """The catalog in memory: vectors L2-normalised and re-quantised to int8 (x127) for the index."""

    info: CatalogInfo
    ids: list[str]
    vectors: npt.NDArray[np.int8]  # (N, D), unit length x 127
    prices: npt.NDArray[np.float64]
    currencies: list[str]
    sold: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)


def normalise_int8(values: npt.NDArray[np.int8], scale: float, zero_point: int) -> npt.NDArray[np.int8]:
    """Dequantise, L2-normalise and re-quantise symmetrically: cosine becomes a plain int8 dot product.

    A positive scale cancels in the normalisation, so it is left out: multiplying by it could only
    overflow float32 (a scale of 1e38 did) without changing the direction. device.wire refuses a scale
    that is not finite and above 0."""
    del scale
    real = values.astype(np.float32) - zero_point
    norm = float(np.linalg.norm(real))
    unit = real / norm if norm > 0 else real
    quantised: npt.NDArray[np.int8] = np.clip(np.rint(unit * 127.0), -127, 127).astype(np.int8)
    return quantised


def write_catalog(path: Path, info: CatalogInfo, items: Iterable[Item]) -> int:
    """Create (or replace) the catalog file; returns the number of items."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("model_id", info.model_id),
                ("model_version", info.model_version),
                ("dim", str(info.dim)),
                ("synthetic", "1" if info.synthetic else "0"),
            ],
        )
        count = 0
        for item in items:
            if len(item.vector) != info.dim:
                raise CatalogError(
                    f"item {item.id}: vector has {len(item.vector)} values, the catalog {info.dim}"
                )
            db.execute(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.id,
                    item.vector,
                    item.scale,
                    item.zero_point,
                    item.price,
                    item.currency,
                    item.status,
                    item.sold_at,
                    item.category,
                ),
            )
            count += 1
        db.commit()
    except sqlite3.IntegrityError as exc:
        raise CatalogError(
            f"catalog {path}: {exc} (duplicate item id, bad status or negative price?)"
        ) from None
    finally:
        db.close()
    tmp.replace(path)  # a half-written catalog never replaces a good one
    return count


def load_catalog(path: Path) -> Catalog:
    if not path.is_file():
        raise CatalogError(f"catalog {path} does not exist; build one with `pricing-service catalog build`")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        rows = db.execute(
            "SELECT id, vector, scale, zero_point, price, currency, status FROM items"
        ).fetchall()
        db.close()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"catalog {path} is not a readable catalog: {exc}") from None
    try:
        info = CatalogInfo(
            meta["model_id"], meta["model_version"], int(meta["dim"]), meta.get("synthetic") == "1"
        )
    except (KeyError, ValueError):
        raise CatalogError(f"catalog {path} lacks its model id, version or dimension") from None
    vectors = np.empty((len(rows), info.dim), dtype=np.int8)
    for i, row in enumerate(rows):
        vectors[i] = normalise_int8(np.frombuffer(row[1], dtype=np.int8), float(row[2]), int(row[3]))
    return Catalog(
        info,
        [str(r[0]) for r in rows],
        vectors,
        np.array([float(r[4]) for r in rows]),
        [str(r[5]) for r in rows],
        np.array([r[6] == "sold" for r in rows], dtype=bool),
    )

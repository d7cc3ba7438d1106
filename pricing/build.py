"""Building catalogs: from a CSV of item photos, or the demo catalog from the bundled photos.

Both embed with the same manifest model the devices run (default `efficientnet-lite0-int8`), and record
its id and version in the catalog.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from device.config import DetectorConfig, EmbedderConfig, RuntimeConfig
from device.errors import InputError
from device.image_header import DEFAULT_MAX_PIXELS
from device.images import read_image
from device.vision.detector import Detection
from device.vision.embedder import Embedder
from device.vision.geometry import Box
from device.vision.manifest import Manifest
from device.vision.models import make_detector
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory
from pricing.catalog import CatalogInfo, Item, write_catalog
from pricing.errors import CatalogError

REQUIRED = ("id", "image", "price", "currency", "status")
# The demo's made-up market: (base price in JPY, share sold) per photo. Marked synthetic in the catalog.
DEMO_MARKET = {
    "astronaut": (48_000, 0.35),
    "coffee": (1_200, 0.8),
    "chelsea": (9_500, 0.6),
    "rocket": (150_000, 0.2),
}
DEMO_VARIANTS = 24  # augmented views per photo: enough neighbours for a confident quote


def load_embedder(manifest_path: Path, model_id: str) -> Embedder:
    manifest = Manifest.load(manifest_path)
    factory = InterpreterFactory(RuntimeConfig(device="cpu"))
    return Embedder(factory.load(manifest, model_id), EmbedderConfig())


def _info(embedder: Embedder, synthetic: bool) -> CatalogInfo:
    entry = embedder.model.entry
    return CatalogInfo(entry.id, entry.version, embedder.dim, synthetic)


def build_from_csv(
    csv_path: Path, out: Path, embedder: Embedder, max_pixels: int = DEFAULT_MAX_PIXELS
) -> int:
    """Embed every image the CSV lists (paths relative to the CSV). Every bad row is reported (a photo
    that declares more than `max_pixels` is refused before it is decoded), and nothing is written
    unless all rows are good: a catalog silently missing items would price against a partial market."""
    rows, errors = _read_rows(csv_path)
    items = []
    for line, row in rows:
        try:
            items.append(_item(row, csv_path.parent, embedder, max_pixels))
        except (InputError, ValueError) as exc:
            errors.append(f"{csv_path}:{line}: {exc}")
    if errors:
        raise CatalogError(f"{len(errors)} bad row(s), nothing written:\n  " + "\n  ".join(errors[:50]))
    return write_catalog(out, _info(embedder, synthetic=False), items)


def _read_rows(csv_path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise CatalogError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}"
                )
            return [(i + 2, row) for i, row in enumerate(reader)], []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"{csv_path} cannot be read as CSV: {exc}") from None


def _item(row: dict[str, str], base: Path, embedder: Embedder, max_pixels: int) -> Item:
    status = row["status"].strip().lower()
    if status not in ("sold", "listed"):
        raise ValueError(f"status {row['status']!r} must be 'sold' or 'listed'")
    price = float(row["price"])
    if price < 0:
        raise ValueError(f"price {price} is negative")
    embedding = embedder.embed(read_image(base / row["image"], max_pixels))
    return Item(
        row["id"],
        embedding.values.tobytes(),
        embedding.scale,
        embedding.zero_point,
        price,
        row["currency"].strip().upper(),
        status,
        row.get("sold_at") or None,
        row.get("category") or None,
    )


def build_demo(photos: Path, out: Path, manifest_path: Path, embedder_id: str, detector_id: str) -> int:
    """The demo catalog: each bundled photo's main object, in many augmented views, with synthetic prices."""
    embedder = load_embedder(manifest_path, embedder_id)
    manifest = Manifest.load(manifest_path)
    detector = make_detector(
        InterpreterFactory(RuntimeConfig(device="cpu")).load(manifest, detector_id),
        DetectorConfig(score_threshold=0.3),
    )
    items = list(_demo_items(photos, embedder, detector.detect))
    return write_catalog(out, _info(embedder, synthetic=True), items)


def _demo_items(
    photos: Path, embedder: Embedder, detect: Callable[[Image], list[Detection]]
) -> Iterator[Item]:
    rng = random.Random(7)  # the same demo catalog every time
    for name, (base_price, sold_share) in DEMO_MARKET.items():
        image = read_image(photos / f"{name}.png")
        found = detect(image)
        box = found[0].box if found else Box(0, 0, image.shape[1], image.shape[0])
        for variant in range(DEMO_VARIANTS):
            view, view_box = _augment(image, box, rng)
            emb = embedder.embed(view, view_box)
            price = round(base_price * rng.uniform(0.75, 1.25), -1)
            status = "sold" if rng.random() < sold_share else "listed"
            yield Item(
                f"demo-{name}-{variant:02d}",
                emb.values.tobytes(),
                emb.scale,
                emb.zero_point,
                price,
                "JPY",
                status,
                "2026-11-01" if status == "sold" else None,
                name,
            )


def _augment(image: Image, box: Box, rng: random.Random) -> tuple[Image, Box]:
    """A flipped, shifted, rescaled, relit view of the object, like another photo of the same kind."""
    h, w = image.shape[:2]
    view = image[:, ::-1] if rng.random() < 0.5 else image
    if view is not image:
        box = Box(w - box.x2, box.y1, w - box.x1, box.y2)
    gain = rng.uniform(0.8, 1.2)
    view = np.clip(view.astype(np.float32) * gain + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
    dx, dy = rng.uniform(-0.06, 0.06) * box.width, rng.uniform(-0.06, 0.06) * box.height
    grow = rng.uniform(0.9, 1.1)
    cx, cy = (box.x1 + box.x2) / 2 + dx, (box.y1 + box.y2) / 2 + dy
    half_w, half_h = box.width * grow / 2, box.height * grow / 2
    moved = Box(cx - half_w, cy - half_h, cx + half_w, cy + half_h).clip(w, h)
    return np.ascontiguousarray(view), moved if moved.area > 0 else box

"""Evaluation datasets, checked before any model runs, so a typo costs a second and not a 5000-image run.

- A COCO folder: `images/` and `annotations.json` (COCO's detection format; val2017 is this layout once
  `val2017/` is linked as `images` and `annotations/instances_val2017.json` as `annotations.json`).
- A retrieval folder: one sub-folder per class, image files in it (`class/image.jpg`).

Every problem is a DatasetError naming the file, the entry and what to do; nothing is evaluated then.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from device.errors import DatasetError

ANNOTATIONS = "annotations.json"
IMAGES = "images"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
COCO_HELP = (
    "a COCO dataset is a folder with images/ and annotations.json (for COCO val2017: "
    "`ln -s val2017 images && ln -s annotations/instances_val2017.json annotations.json`, docs/models.md)"
)


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class CocoDataset:
    root: Path
    images: tuple[CocoImage, ...]
    categories: dict[int, str]  # category id -> name
    # The checked annotations in COCO's own layout (bbox only, area and iscrowd filled in), for the
    # evaluator: faster-coco-eval reads this dict as it would read the file.
    coco: dict[str, Any]

    @property
    def annotation_count(self) -> int:
        return len(self.coco["annotations"])


@dataclass(frozen=True)
class RetrievalSet:
    root: Path
    items: tuple[tuple[str, Path], ...]  # (class, image file), sorted

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({label for label, _ in self.items}))


def dataset_kind(root: Path) -> Literal["coco", "retrieval"]:
    """Which evaluation a folder is for: COCO detection (annotations.json) or retrieval (class folders)."""
    if not root.is_dir():
        raise DatasetError(f"dataset {root} does not exist or is not a folder; {COCO_HELP}")
    if (root / ANNOTATIONS).exists():
        return "coco"
    if (root / IMAGES).is_dir():
        raise DatasetError(f"dataset {root} has images/ but no {ANNOTATIONS}; {COCO_HELP}")
    if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return "retrieval"
    raise DatasetError(
        f"dataset {root} is neither a COCO folder ({IMAGES}/ and {ANNOTATIONS}) nor a retrieval folder "
        "(one sub-folder of images per class)"
    )


def load_coco(root: Path) -> CocoDataset:
    if dataset_kind(root) != "coco":
        raise DatasetError(f"dataset {root} has no {ANNOTATIONS}; {COCO_HELP}")
    path = root / ANNOTATIONS
    raw = _read_json(path)
    categories = _categories(path, raw)
    images = _images(root, path, raw)
    annotations = _annotations(path, raw, {i.id: i for i in images}, categories)
    if not images:
        raise DatasetError(f"{path} lists no images: nothing to evaluate")
    if not annotations:
        raise DatasetError(f"{path} has no annotations: nothing to evaluate (add boxes, or use another set)")
    coco = {
        "images": [
            {"id": i.id, "file_name": i.path.name, "width": i.width, "height": i.height} for i in images
        ],
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in categories.items()],
    }
    return CocoDataset(root, images, categories, coco)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text: it must be COCO annotations in JSON") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path} does not parse as JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "fix the file (python3 -m json.tool shows where)"
        ) from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path} must hold a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise DatasetError(
                f"{path} has no list {key!r}: COCO annotations need images, annotations and categories"
            )
    return raw


def _int_field(path: Path, what: str, entry: Any, key: str) -> int:
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(f"{path}: {what} needs an integer {key!r}, got {value!r}")
    return value


def _categories(path: Path, raw: dict[str, Any]) -> dict[int, str]:
    categories: dict[int, str] = {}
    for index, entry in enumerate(raw["categories"]):
        ident = _int_field(path, f"categories[{index}]", entry, "id")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{path}: category {ident} needs a name")
        if ident in categories:
            raise DatasetError(f"{path}: category id {ident} appears twice; give each category one id")
        categories[ident] = name.strip()
    if not categories:
        raise DatasetError(f"{path} lists no categories: nothing to evaluate")
    return categories


def _images(root: Path, path: Path, raw: dict[str, Any]) -> tuple[CocoImage, ...]:
    images: dict[int, CocoImage] = {}
    for index, entry in enumerate(raw["images"]):
        ident = _int_field(path, f"images[{index}]", entry, "id")
        name = entry.get("file_name")
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise DatasetError(f"{path}: image {ident} needs a file_name inside {IMAGES}/, got {name!r}")
        width = _int_field(path, f"image {ident}", entry, "width")
        height = _int_field(path, f"image {ident}", entry, "height")
        if width <= 0 or height <= 0:
            raise DatasetError(f"{path}: image {ident} ({name}) has size {width}x{height}")
        if ident in images:
            raise DatasetError(f"{path}: image id {ident} appears twice; give each image one id")
        file = root / IMAGES / name
        if not file.is_file():
            raise DatasetError(
                f"image {file} (id {ident} in {path}) does not exist: copy it into {root / IMAGES} or "
                f"remove it from {ANNOTATIONS}"
            )
        images[ident] = CocoImage(ident, file, width, height)
    return tuple(images.values())


def _annotations(
    path: Path, raw: dict[str, Any], images: dict[int, CocoImage], categories: dict[int, str]
) -> list[dict[str, Any]]:
    checked: list[dict[str, Any]] = []
    seen: set[int] = set()
    for index, entry in enumerate(raw["annotations"]):
        ident = _int_field(path, f"annotations[{index}]", entry, "id")
        what = f"annotation {ident}"
        image_id = _int_field(path, what, entry, "image_id")
        category_id = _int_field(path, what, entry, "category_id")
        if ident in seen:
            raise DatasetError(f"{path}: annotation id {ident} appears twice; give each box one id")
        seen.add(ident)
        if image_id not in images:
            raise DatasetError(f"{path}: {what} is on image {image_id}, which is not in its images list")
        if category_id not in categories:
            raise DatasetError(
                f"{path}: {what} has category_id {category_id}, an unknown category (known: "
                f"{', '.join(str(c) for c in sorted(categories))}): add it to categories or fix the id"
            )
        box = _bbox(path, what, entry.get("bbox"), images[image_id])
        area = entry.get("area", box[2] * box[3])
        crowd = entry.get("iscrowd", 0)
        checked.append(
            {
                "id": ident,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": box,
                "area": float(area) if isinstance(area, int | float) else box[2] * box[3],
                "iscrowd": 1 if crowd in (1, True) else 0,
            }
        )
    return checked


def _bbox(path: Path, what: str, value: Any, image: CocoImage) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise DatasetError(f"{path}: {what} needs bbox [x, y, width, height] of 4 numbers, got {value!r}")
    x, y, w, h = (float(v) for v in value)
    # A pixel of slack: COCO's own boxes poke out of their images by a fraction of a pixel.
    if w <= 0 or h <= 0 or x < -1 or y < -1 or x + w > image.width + 1 or y + h > image.height + 1:
        raise DatasetError(
            f"{path}: {what} has bbox {value!r}, which is empty or outside its image "
            f"{image.path.name} ({image.width}x{image.height}); COCO boxes are [x, y, width, height] in "
            "pixels"
        )
    return [x, y, w, h]


def load_retrieval(root: Path) -> RetrievalSet:
    if dataset_kind(root) != "retrieval":
        raise DatasetError(f"dataset {root} is a COCO folder; retrieval needs one sub-folder per class")
    items: list[tuple[str, Path]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        strays = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if strays:
            raise DatasetError(
                f"class folder {folder} holds files that are not images ({', '.join(strays[:3])}); "
                f"only {', '.join(sorted(IMAGE_SUFFIXES))} belong there"
            )
        if len(files) < 2:
            raise DatasetError(
                f"class {folder.name!r} in {root} has {len(files)} image(s): each class needs at least 2, "
                "or its images can never find a match"
            )
        items += [(folder.name, p) for p in files]
    if len({label for label, _ in items}) < 2:
        raise DatasetError(f"retrieval dataset {root} needs at least 2 class folders of images")
    return RetrievalSet(root, tuple(items))

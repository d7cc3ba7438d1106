"""`appliance detect` and `appliance embed`: run the real models on image files."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

from device.commands.context import Context
from device.errors import InputError
from device.images import read_image
from device.vision.embedder import Embedder, Embedding, cosine
from device.vision.models import make_detector

log = logging.getLogger(__name__)


def detect(ctx: Context, images: list[str], model_id: str | None, as_json: bool) -> int:
    """Print each image's detections. A bad image is reported and skipped; the exit code is then 1."""
    loaded = ctx.factory.load(ctx.manifest, model_id or ctx.config.models.detector)
    detector = make_detector(loaded, ctx.config.detector)
    results: list[dict[str, Any]] = []
    for name in images:
        try:
            frame = read_image(Path(name), ctx.config.camera.max_image_pixels)
        except InputError as exc:
            log.error("%s", exc)
            results.append({"image": name, "error": str(exc)})
            continue
        found = detector.detect(frame)
        results.append(
            {
                "image": name,
                "width": int(frame.shape[1]),
                "height": int(frame.shape[0]),
                "detections": [
                    {
                        "label": d.label,
                        "class_id": d.class_id,
                        "score": round(d.score, 4),
                        "box": [round(v, 1) for v in d.box],
                    }
                    for d in found
                ],
            }
        )
    report = {"model": loaded.status(), "results": results}
    print(json.dumps(report, indent=2) if as_json else _detect_text(report))
    return 1 if any("error" in r for r in results) else 0


def _detect_text(report: dict[str, Any]) -> str:
    model = report["model"]
    lines = [f"model {model['id']} {model['version']} on {model['accelerator']}"]
    for result in report["results"]:
        if "error" in result:
            lines.append(f"{result['image']}: ERROR {result['error']}")
            continue
        lines.append(
            f"{result['image']} ({result['width']}x{result['height']}): "
            f"{len(result['detections'])} detection(s)"
        )
        for d in result["detections"]:
            box = ", ".join(f"{v:.0f}" for v in d["box"])
            lines.append(f"  {d['label']:<16} {d['score']:.2f}  [{box}]")
    return "\n".join(lines)


def embed(ctx: Context, images: list[str], as_json: bool) -> int:
    """Embed each whole image; print the dimension and the pairwise cosine similarities."""
    loaded = ctx.factory.load(ctx.manifest, ctx.config.models.embedder)
    embedder = Embedder(loaded, ctx.config.embedder)
    vectors: dict[str, Embedding] = {}
    errors: dict[str, str] = {}
    for name in images:
        try:
            vectors[name] = embedder.embed(read_image(Path(name), ctx.config.camera.max_image_pixels))
        except InputError as exc:
            log.error("%s", exc)
            errors[name] = str(exc)
    pairs = [
        {"a": a, "b": b, "cosine": round(cosine(vectors[a], vectors[b]), 4)}
        for a, b in itertools.combinations(vectors, 2)
    ]
    report = {
        "model": loaded.status(),
        "dim": embedder.dim,
        "images": [
            {"image": n, "dim": v.dim, "scale": v.scale, "zero_point": v.zero_point}
            for n, v in vectors.items()
        ],
        "cosines": pairs,
        "errors": [{"image": n, "error": e} for n, e in errors.items()],
    }
    print(json.dumps(report, indent=2) if as_json else _embed_text(report))
    return 1 if errors else 0


def _embed_text(report: dict[str, Any]) -> str:
    lines = [f"model {report['model']['id']} on {report['model']['accelerator']}: dimension {report['dim']}"]
    lines += [f"{p['cosine']:+.3f}  {p['a']}  {p['b']}" for p in report["cosines"]]
    lines += [f"{e['image']}: ERROR {e['error']}" for e in report["errors"]]
    return "\n".join(lines)

"""Behaviour checks, run with the device's runtime (LiteRT)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from .photos import load_rgb
from .ssd import SSD_SIZE


class Runner:
    """One LiteRT interpreter; feeds an image, returns outputs by name."""

    def __init__(self, path: Path, normalise: tuple[float, float] | None = None) -> None:
        self.interp = Interpreter(model_path=str(path), num_threads=2)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        # (mean, std) for a float model whose input is (pixel - mean) / std, not the pixel itself.
        self.normalise = normalise

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        dtype = self.input["dtype"]
        data = np.clip(np.round(image), 0, 255) if dtype == np.uint8 else image
        if self.normalise is not None and dtype == np.float32:
            # Rounded first, as the int8 model sees the pixels: the comparison is then like for like.
            data = (np.round(image) - self.normalise[0]) / self.normalise[1]
        self.interp.set_tensor(self.input["index"], data[None].astype(dtype))
        self.interp.invoke()
        # Select outputs by name: their index order is not the name order.
        return {d["name"]: self.interp.get_tensor(d["index"]) for d in self.interp.get_output_details()}


@dataclass
class Check:
    """Accumulates the outcome of one model's behaviour check."""

    model: str
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def expect(self, ok: bool, message: str) -> None:
        (self.notes if ok else self.failures).append(message)


def ssd_top(outputs: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """Best person score and its box (ymin, xmin, ymax, xmax in 0..1)."""
    by_suffix = {name.rsplit(":", 1)[-1]: value for name, value in outputs.items()}
    boxes, scores = by_suffix["0"][0], by_suffix["2"][0]
    best = int(np.argmax(scores))
    return float(scores[best]), boxes[best]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (y1, x1, y2, x2) boxes."""
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    area = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / area) if area > 0 else 0.0


def check_ssd(path: Path, committed: Path, images: Path) -> Check:
    check, new, old = Check(path.name), Runner(path), Runner(committed)
    photo = load_rgb(images / "astronaut.png", SSD_SIZE)
    score, box = ssd_top(new(photo))
    px = box[[1, 0, 3, 2]] * 512  # x1, y1, x2, y2 on the 512x512 photo
    check.expect(score >= 0.8, f"astronaut person score {score:.2f} (>= 0.80)")
    near = np.abs(px - np.array([5, 33, 375, 509])).max()
    check.expect(
        near <= 30,
        f"astronaut box x {px[0]:.0f}-{px[2]:.0f} "
        f"y {px[1]:.0f}-{px[3]:.0f} (within 30 px of x 5-375 y 33-509)",
    )
    old_score, old_box = ssd_top(old(photo))
    check.expect(
        abs(score - old_score) <= 0.1 and iou(box, old_box) >= 0.85,
        f"committed model: score {old_score:.2f}; box IoU with it {iou(box, old_box):.2f} (>= 0.85)",
    )
    for other in ("chelsea", "coffee", "rocket"):
        stray, _ = ssd_top(new(load_rgb(images / f"{other}.png", SSD_SIZE)))
        check.expect(stray <= 0.3, f"{other} person score {stray:.2f} (<= 0.30)")
    return check


def centernet_detections(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of x1, y1, x2, y2, score, class from either CenterNet variant."""
    if "tower_0/detections" in outputs:
        return np.asarray(outputs["tower_0/detections"][0], dtype=np.float32)
    heat, dist = outputs["tower_0/Sigmoid"][0], outputs["tower_0/mul"][0]
    # Same decode as the full graph: 3x3 max-pool peaks, then top 100.
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1)).max(axis=(-1, -2))
    peaks = np.where(heat == pooled, heat, 0.0).reshape(-1)
    rows = []
    for flat in np.argsort(-peaks, kind="stable")[:100]:
        cell, cls = divmod(int(flat), heat.shape[2])
        y, x = divmod(cell, heat.shape[1])
        left, top, right, bottom = dist[y, x]
        rows.append([x * 4 - left, y * 4 - top, x * 4 + right, y * 4 + bottom, peaks[flat], cls])
    return np.array(rows, np.float32)


def best_of(dets: np.ndarray, cls: int) -> float:
    scores = dets[dets[:, 5] == cls, 4]
    return float(scores.max()) if scores.size else 0.0


def check_centernet(path: Path, committed: Path, images: Path) -> Check:
    check, new, old = Check(path.name), Runner(path), Runner(committed)
    expectations = [("astronaut", 0, "person", 0.5), ("coffee", 41, "cup", 0.3)]
    for photo_name, cls, label, minimum in expectations:
        photo = load_rgb(images / f"{photo_name}.png", 512)
        dets, ref = centernet_detections(new(photo)), centernet_detections(old(photo))
        score, ref_score = best_of(dets, cls), best_of(ref, cls)
        check.expect(score >= minimum, f"{photo_name}: {label} {score:.2f} (>= {minimum:.2f})")
        check.expect(
            abs(score - ref_score) <= 0.05,
            f"{photo_name}: committed model says {label} {ref_score:.2f} (±0.05)",
        )
    return check


def embed(runner: Runner, image: np.ndarray) -> np.ndarray:
    """Dequantised, L2-normalised embedding."""
    detail = runner.interp.get_output_details()[0]
    vec = next(iter(runner(image).values()))[0].astype(np.float32)
    if detail["dtype"] != np.float32:
        scale, zero = detail["quantization"]
        vec = (vec - zero) * scale
    return np.asarray(vec / (np.linalg.norm(vec) + 1e-12), dtype=np.float32)


def check_embedder(path: Path, committed: Path, images: Path) -> Check:
    old = Runner(committed)
    # A float variant of the int8 embedder takes the value the int8 input stood for.
    scale, zero = old.input["quantization"]
    check, new = Check(path.name), Runner(path, normalise=(float(zero), 1.0 / float(scale)))
    names = ("astronaut", "chelsea", "coffee", "rocket")
    photos = {n: load_rgb(images / f"{n}.png", 224) for n in names}
    vecs = {n: embed(new, p) for n, p in photos.items()}
    flipped = float(vecs["astronaut"] @ embed(new, photos["astronaut"][:, ::-1]))
    check.expect(flipped >= 0.9, f"astronaut vs mirrored: cosine {flipped:.2f} (>= 0.90)")
    worst = max(float(vecs[a] @ vecs[b]) for a in names for b in names if a < b)
    check.expect(worst <= 0.4, f"different photos: max cosine {worst:.2f} (<= 0.40)")
    agree = min(float(vecs[n] @ embed(old, p)) for n, p in photos.items())
    check.expect(agree >= 0.95, f"vs committed: min cosine {agree:.2f} (>= 0.95)")
    return check


CheckFn = Callable[[Path, Path, Path], Check]
# Per model file, its family's check; variants.VARIANTS names the file it is compared with.
MODEL_CHECKS: dict[str, CheckFn] = {
    "ssdlite_mbv2_person_int8.tflite": check_ssd,
    "ssdlite_mbv2_person_float32.tflite": check_ssd,
    "ssdlite_mbv2_person_dynamic.tflite": check_ssd,
    "centernet_mbv3_full_float32.tflite": check_centernet,
    "centernet_mbv3_head_float32.tflite": check_centernet,
    "centernet_mbv3_full_dynamic.tflite": check_centernet,
    "centernet_mbv3_full_int8.tflite": check_centernet,
    "efficientnet_lite0_int8_embedder.tflite": check_embedder,
    "efficientnet_lite0_float32_embedder.tflite": check_embedder,
    "efficientnet_lite0_dynamic_embedder.tflite": check_embedder,
}

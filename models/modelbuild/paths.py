"""Where the repository, the committed models and the sample photos live."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
MODELS_DIR = REPO / "models"
DEFAULT_IMAGES = REPO / "tests" / "data"

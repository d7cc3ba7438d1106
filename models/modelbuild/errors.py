"""The error a model family raises when it cannot be built."""

from __future__ import annotations


class BuildError(RuntimeError):
    """A model could not be produced; the message says why and for which."""

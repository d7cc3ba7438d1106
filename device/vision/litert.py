"""The LiteRT import boundary: ai-edge-litert first, tflite-runtime as the fallback.

Everything else in the firmware talks to the `Interpreter` protocol below, never to a runtime module,
so that the choice of runtime (and its quirks) stays in this one file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Interpreter(Protocol):
    """The part of the TFLite Interpreter API the firmware uses."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, tensor_index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> npt.NDArray[Any]: ...
    def tensor(self, tensor_index: int) -> Callable[[], npt.NDArray[Any]]: ...


InterpreterClass = Callable[..., Interpreter]
LoadDelegate = Callable[..., object]


@dataclass(frozen=True)
class LiteRT:
    name: str  # "ai-edge-litert" or "tflite-runtime"
    interpreter: InterpreterClass
    load_delegate: LoadDelegate


def import_litert() -> LiteRT:
    """Prefer ai-edge-litert: it runs int8 models through XNNPack (about 40x faster on the CPU than
    tflite-runtime 2.14) and works with numpy 2. tflite-runtime stays as a fallback for images that only
    have it."""
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        from tflite_runtime import interpreter as litert

        return LiteRT("tflite-runtime", litert.Interpreter, litert.load_delegate)
    return LiteRT("ai-edge-litert", litert.Interpreter, litert.load_delegate)


def _is_delegate_del_noise(unraisable: Any) -> bool:
    obj = getattr(unraisable, "object", None)
    return isinstance(unraisable.exc_value, AttributeError) and "Delegate.__del__" in repr(obj)


@contextmanager
def quiet_failed_delegate() -> Iterator[None]:
    """When load_delegate fails, the half-built Delegate's __del__ raises a harmless AttributeError
    that Python prints as a traceback. Operators would read it as a crash, so drop exactly that one."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _is_delegate_del_noise(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def zeros_for(details: Sequence[dict[str, Any]]) -> list[npt.NDArray[Any]]:
    """Inputs for a warm-up invoke: zeros of each input's shape and dtype."""
    return [np.zeros(d["shape"], dtype=d["dtype"]) for d in details]

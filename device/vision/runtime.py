"""The interpreter factory: verify a model, place it on an Edge TPU or the CPU, warm it up.

Placement rules (config `[runtime]`):
- `device = "cpu"`: never touch the delegate.
- any other spec: load the Edge TPU delegate (`delegate_library`, libedgetpu.so.1 on a device) with the
  spec's `device` option. If that fails, `fallback = "cpu"` runs on the CPU with one WARNING that names
  the reason and a flag that status and stats show; `fallback = "fail"` raises AcceleratorError.
- A model compiled for the Edge TPU (it holds `edgetpu-custom-op`) cannot run on the CPU: without a TPU
  it is replaced by its manifest `cpu_twin`, or refused with an error naming the model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from device.config import RuntimeConfig
from device.devicespec import DeviceSpec, parse_device_spec
from device.errors import AcceleratorError, ModelError
from device.vision.litert import Interpreter, LiteRT, import_litert, quiet_failed_delegate, zeros_for
from device.vision.manifest import Manifest, ModelEntry

log = logging.getLogger(__name__)

EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"


@dataclass(frozen=True)
class Placement:
    """Where a model runs, and why. Reported in status and stats."""

    accelerator: str  # "edgetpu" or "cpu"
    device: str  # the device spec used, e.g. "usb:0", "auto" or "cpu"
    cpu_fallback: bool = False
    reason: str = ""


@dataclass
class LoadedModel:
    entry: ModelEntry
    interpreter: Interpreter
    placement: Placement
    labels: tuple[str, ...] = ()
    warmup_ms: float = 0.0
    requested_id: str = ""  # differs from entry.id when a CPU twin stands in

    def status(self) -> dict[str, object]:
        return {
            "id": self.entry.id,
            "version": self.entry.version,
            "accelerator": self.placement.accelerator,
            "cpu_fallback": self.placement.cpu_fallback,
            "reason": self.placement.reason,
        }


@dataclass
class InterpreterFactory:
    config: RuntimeConfig
    litert: LiteRT = field(default_factory=import_litert)
    _delegate_failure: str | None = field(default=None, init=False)

    @property
    def spec(self) -> DeviceSpec:
        return parse_device_spec(self.config.device)

    def load(self, manifest: Manifest, model_id: str) -> LoadedModel:
        """Verify, place, build and warm up one model from the manifest."""
        entry = manifest.get(model_id)
        content = read_verified(entry)
        delegate, placement = self._delegate()
        if EDGETPU_CUSTOM_OP in content and delegate is None:
            return self._load_twin(manifest, entry, placement)
        interpreter = self._build(entry, content, delegate)
        loaded = LoadedModel(entry, interpreter, placement, manifest.labels(entry), requested_id=model_id)
        loaded.warmup_ms = warm_up(loaded, self.config.warmup_runs)
        log.info(
            "model %s %s ready on %s (%s) in %.1f ms warm-up",
            entry.id,
            entry.version,
            placement.accelerator,
            placement.device,
            loaded.warmup_ms,
        )
        return loaded

    def _load_twin(self, manifest: Manifest, entry: ModelEntry, placement: Placement) -> LoadedModel:
        if entry.cpu_twin is None:
            raise ModelError(
                f"model {entry.id} ({entry.file}) is compiled for the Edge TPU (it holds "
                f"edgetpu-custom-op) and cannot run on the CPU, but no Edge TPU is in use: "
                f"{placement.reason or 'runtime.device is cpu'}. Connect a Coral and install "
                f"libedgetpu1-std, or give the model a cpu_twin in {manifest.path}"
            )
        log.warning("model %s needs an Edge TPU; using its CPU twin %s", entry.id, entry.cpu_twin)
        twin = self.load(manifest, entry.cpu_twin)
        twin.requested_id = entry.id
        return twin

    def _delegate(self) -> tuple[object | None, Placement]:
        spec = self.spec
        if not spec.wants_tpu:
            return None, Placement("cpu", "cpu")
        if self._delegate_failure is None:
            try:
                delegate = self._load_delegate(spec)
                return delegate, Placement("edgetpu", str(spec))
            except AcceleratorError as exc:
                self._delegate_failure = str(exc)
                if self.config.fallback == "fail":
                    raise
                # One WARNING per process, not one per model: the cause is the same for all of them.
                log.warning("running on the CPU: %s", exc)
        return None, Placement("cpu", str(spec), cpu_fallback=True, reason=self._delegate_failure)

    def _load_delegate(self, spec: DeviceSpec) -> object:
        library = self.config.delegate_library
        with quiet_failed_delegate():
            try:
                return self.litert.load_delegate(library, spec.delegate_options())
            except (OSError, ValueError, RuntimeError) as exc:
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AcceleratorError(
            f"no Edge TPU for device spec {spec!s} ({why if library in why else f'{library}: {why}'}). "
            "Check `appliance tpus`, "
            "the USB/PCIe connection and that libedgetpu1-std is installed, or set runtime.device = "
            '"cpu"'
        )

    def _build(self, entry: ModelEntry, content: bytes, delegate: object | None) -> Interpreter:
        delegates = [delegate] if delegate is not None else None
        try:
            interpreter = self.litert.interpreter(
                model_content=content,
                experimental_delegates=delegates,
                num_threads=self.config.num_threads,
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"model file {entry.file} (model {entry.id}) cannot be loaded by "
                f"{self.litert.name}: {first}. The file is corrupt or not a TFLite model; "
                "reinstall it or run `make models`"
            ) from None
        return interpreter


def read_verified(entry: ModelEntry) -> bytes:
    """Read the model file once and check its sha256, so the bytes we load are the bytes we checked."""
    path = Path(entry.file)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} (model {entry.id}) does not exist") from None
    except OSError as exc:
        raise ModelError(f"model file {path} (model {entry.id}) cannot be read: {exc.strerror}") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != entry.sha256:
        raise ModelError(
            f"model file {path} (model {entry.id}) has sha256 {digest}, but the manifest says "
            f"{entry.sha256}: the file is corrupt, truncated or was replaced. Reinstall the model; "
            "never edit the manifest to match an unknown file"
        )
    return content


def warm_up(model: LoadedModel, runs: int) -> float:
    """Invoke on zeros before serving: the first invoke on an Edge TPU uploads the model to the TPU and
    is many times slower than the rest. Returns the first invoke's time in ms."""
    interpreter = model.interpreter
    details = interpreter.get_input_details()
    first_ms = 0.0
    for run in range(runs):
        for detail, value in zip(details, zeros_for(details), strict=True):
            interpreter.set_tensor(detail["index"], value)
        start = time.perf_counter()
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise ModelError(
                f"model file {model.entry.file} (model {model.entry.id}) fails to run on "
                f"{model.placement.accelerator}: {str(exc).strip().splitlines()[0]}"
            ) from None
        if run == 0:
            first_ms = (time.perf_counter() - start) * 1000.0
    return first_ms

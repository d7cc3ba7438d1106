"""Edge TPU compilation of the int8 models, where Coral's edgetpu_compiler is on the PATH.

The compiler is not on PyPI or in Debian (Coral's apt repository, x86-64 only), so a build machine
without it says so in one line and goes on. Where it is, every int8 model is compiled and the
compiler's own log says how many operations map to the Edge TPU; that count is printed per model.
Standard library only: tests run this in the device's venv (`python -m modelbuild.edgetpu`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

COMPILER = "edgetpu_compiler"
NOT_ON_PATH = (
    f"edgetpu: {COMPILER} is not on PATH, so no int8 model was compiled for the Edge TPU "
    "(it comes from Coral's apt repository, x86-64 only)"
)
_ON_TPU = re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)")
_ON_CPU = re.compile(r"Number of operations that will run on CPU:\s*(\d+)")
_TOTAL = re.compile(r"Total number of operations:\s*(\d+)")
_PARTIAL = "not all operations are supported"


@dataclass(frozen=True)
class OpMapping:
    on_tpu: int
    on_cpu: int

    @property
    def total(self) -> int:
        return self.on_tpu + self.on_cpu

    def line(self, model: str) -> str:
        counts = f"{self.on_tpu} of {self.total} operations on the Edge TPU, {self.on_cpu} on the CPU"
        return f"edgetpu  {model}: {counts}"


def parse_log(text: str) -> OpMapping:
    """The operation counts from the compiler's standard output. ValueError if it has none."""
    tpu, cpu = _ON_TPU.search(text), _ON_CPU.search(text)
    if tpu and cpu:
        return OpMapping(int(tpu.group(1)), int(cpu.group(1)))
    total = _TOTAL.search(text)
    # The compiler prints the two counts only when some operations stay on the CPU; a model that
    # maps whole gets the total and no warning.
    if total and _PARTIAL not in text:
        return OpMapping(int(total.group(1)), 0)
    raise ValueError("the compiler's output has no operation counts (did the compilation fail?)")


def compile_models(models: list[Path], out: Path) -> list[str]:
    """Compile each int8 model into out/edgetpu; one printed line per model, or NOT_ON_PATH."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        return [NOT_ON_PATH]
    (out / "edgetpu").mkdir(parents=True, exist_ok=True)
    lines = []
    for model in models:
        cmd = [compiler, "-s", "-o", str(out / "edgetpu"), str(model)]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            lines.append(f"edgetpu  {model.name}: {COMPILER} did not run: {exc}")
            continue
        try:
            lines.append(parse_log(run.stdout).line(model.name))
        except ValueError as exc:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            lines.append(f"edgetpu  {model.name}: exit {run.returncode}, {exc}: {tail[0]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile int8 models for the Edge TPU, or parse a log.")
    parser.add_argument("models", nargs="*", type=Path, help="int8 .tflite files to compile")
    parser.add_argument("--out", type=Path, default=Path("build/models"), help="output directory")
    parser.add_argument("--parse", type=Path, help="print the counts in this compiler log instead")
    args = parser.parse_args(argv)
    if args.parse is not None:
        print(parse_log(args.parse.read_text()).line(args.parse.name))
        return 0
    for line in compile_models(args.models, args.out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

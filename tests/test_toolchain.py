"""The test runner's own set-up, where a failure would be silent: `make test` keeps each costly module
rig on one worker with `--dist loadgroup`, and with pytest 9.2 that grouping quietly stopped working
(pytest-xdist issue 1386): the tests passed, each worker just started its own rig."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GROUPED = """
import pytest

pytestmark = pytest.mark.xdist_group("rig")


@pytest.mark.parametrize("n", range(6))
def test_grouped(n):
    pass
"""


def test_loadgroup_sends_a_modules_group_to_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    isolated = ["-p", "no:randomly", "-p", "no:cacheprovider", "-c", "/dev/null", "--rootdir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "3", "--dist", "loadgroup", "-v", *isolated, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ran = re.findall(r"\[(gw\d+)\] .*PASSED .*test_grouped\[(\d)\](@\w+)?", run.stdout)
    assert len(ran) == 6, run.stdout[-2000:]
    assert {group for _, _, group in ran} == {"@rig"}  # the group reached the scheduler
    assert len({worker for worker, _, _ in ran}) == 1, ran

"""The health window's verdicts: errors and slowdowns roll back, too little evidence keeps it open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.clock import FakeClock
from device.config import OtaConfig
from device.ota.health import MIN_INVOKES, HealthWatch
from device.vision.embedder import Embedder

from .broker import Mosquitto
from .ota_helpers import daemon_rig, last_outcome, light_pipeline, new_repo, release

OTA = OtaConfig(health_window_s=60, health_min_frames=10, max_errors=3, latency_regression=1.5)


def test_errors_in_the_window_roll_back_at_once(load_model: Any, embedder: Embedder) -> None:
    p = light_pipeline(load_model, FakeClock())
    watch = HealthWatch.open("detector", "1.1.0", 0.0, p, baseline_ms=5.0)
    p.counters.errors += 2
    assert watch.verdict(1.0, p, OTA) is None
    p.counters.errors += 1
    verdict = watch.verdict(1.0, p, OTA)
    assert verdict is not None and not verdict.healthy and "3 inference errors" in verdict.reason


def test_no_verdict_without_enough_frames_or_time(load_model: Any, embedder: Embedder) -> None:
    p = light_pipeline(load_model, FakeClock())
    watch = HealthWatch.open("detector", "1.1.0", 0.0, p, baseline_ms=5.0)
    p.counters.frames += 9
    assert watch.verdict(120.0, p, OTA) is None  # the camera was down: no evidence, no verdict
    p.counters.frames += 1
    assert watch.verdict(30.0, p, OTA) is None  # the window is not over
    for _ in range(MIN_INVOKES - 1):
        p.invoke_ms["detector"].add(5.5)
    assert watch.verdict(61.0, p, OTA) is None  # too few invokes to time: wait for more
    p.invoke_ms["detector"].add(90.0)  # one slow invoke does not count against a median
    verdict = watch.verdict(61.0, p, OTA)
    assert verdict is not None and verdict.healthy and "10 frames, 0 errors, 5.5 ms" in verdict.reason


def test_a_model_too_rarely_invoked_to_time_is_judged_on_errors_after_three_windows(
    load_model: Any, embedder: Embedder
) -> None:
    p = light_pipeline(load_model, FakeClock())
    watch = HealthWatch.open("embedder", "1.1.0", 0.0, p, baseline_ms=5.0)
    p.counters.frames += 100
    p.invoke_ms["embedder"].add(50.0)
    assert watch.verdict(179.0, p, OTA) is None
    verdict = watch.verdict(181.0, p, OTA)
    assert verdict is not None and verdict.healthy and "too few invokes to time" in verdict.reason


def test_a_slower_model_rolls_back_at_the_end_of_the_window(load_model: Any, embedder: Embedder) -> None:
    p = light_pipeline(load_model, FakeClock())
    watch = HealthWatch.open("detector", "1.1.0", 0.0, p, baseline_ms=4.0)
    p.counters.frames += 10
    for _ in range(MIN_INVOKES):
        p.invoke_ms["detector"].add(6.4)
    verdict = watch.verdict(61.0, p, OTA)
    assert verdict is not None and not verdict.healthy
    assert "latency regression: 6.4 ms per invoke against 4.0 ms (1.60x, limit 1.5x)" in verdict.reason


@pytest.mark.heavy
def test_the_daemon_rolls_back_a_detector_that_is_much_slower(broker: Mosquitto, tmp_path: Path) -> None:
    """The real thing: SSD int8 runs; CenterNet float (several times slower on this CPU) is released as
    the next detector; its health window measures both and rolls it back."""
    repo = new_repo(tmp_path)
    release(repo, "2.0.0", model_id="centernet-coco-float")
    env = {
        "APPLIANCE_MODELS__DETECTOR": "ssdlite-person-int8",
        "APPLIANCE_OTA__KINDS": '["detector"]',
        "APPLIANCE_OTA__HEALTH_WINDOW_S": "4",
        "APPLIANCE_OTA__INTERVAL_S": "5",  # the first check comes within one interval
        "APPLIANCE_OTA__HEALTH_MIN_FRAMES": "10",
    }
    with daemon_rig(broker.port, tmp_path, repo, extra=env) as rig:
        daemon = rig.start()
        status = rig.status(lambda s: last_outcome(s) == "rolled_back", 90, "the rollback")
        assert "latency regression" in status["ota"]["last"]["reason"]
        assert status["models"]["detector"]["id"] == "ssdlite-person-int8"
        assert daemon.poll() is None
    assert "centernet-coco-float 2.0.0 ready" in (tmp_path / "daemon.log").read_text()

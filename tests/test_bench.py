"""The benchmark commands run and report every figure (their values are judged in docs/benchmarks.md,
never here: timing assertions in tests only measure how busy the CI machine is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from device.commands.bench_ota import ota_checks
from device.commands.bench_support import PRESSURE_CPU, LoadSpan, load_line, parse_pressure
from pricing.bench_fuzz import fuzz_checks

from .cli_helpers import appliance
from .conftest import ROOT

CPU = {"APPLIANCE_RUNTIME__DEVICE": "cpu"}


def test_bench_models_reports_each_model_and_thread_count() -> None:
    result = appliance("bench", "models", "--iterations", "3", "--json", env=CPU, timeout=300)
    assert result.returncode in (0, 1), result.stderr  # 1 only if a budget is missed
    report = json.loads(result.stdout)
    pairs = {(r["model"], r["threads"]) for r in report["results"]}
    assert ("ssdlite-person-int8", 1) in pairs and ("efficientnet-lite0-int8", 2) in pairs
    for row in report["results"]:
        assert row["invoke_ms"]["median"] > 0 and row["invoke_ms"]["p90"] >= row["invoke_ms"]["median"]
        assert row["preprocess_ms"]["median"] > 0 and row["decode_ms"]["median"] >= 0
    assert {c["budget"] for c in report["checks"]} == {0.15}


def test_bench_pipeline_reports_every_figure() -> None:
    result = appliance("bench", "pipeline", "--frames", "12", "--json", env=CPU, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert set(report["fps"]) == {"pipeline_every_frame", "raw_interpreters", "pipeline_detect_every_3"}
    assert all(v > 0 for v in report["fps"].values())
    assert report["message"]["bytes"] == 1373 and report["message"]["jpeg_over_message"] > 1
    assert report["non_inference_ms"]["median"] > 0
    assert len(report["checks"]) == 4


def test_bench_ota_reports_download_check_and_swap_figures() -> None:
    result = appliance("bench", "ota", "--rounds", "2", "--json", env=CPU, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["target_bytes"] > 5_000_000  # the embedder, really downloaded and verified
    assert report["verified_download"]["ms"] > report["plain_get"]["ms"] > 0
    assert report["whole_check_ms"] > report["verified_download"]["ms"]
    gaps = report["frame_gap_ms"]
    assert gaps["with_swap"] > 0 and gaps["without_swap"] > 0 and gaps["detection_interval"] == 200.0
    assert [c["check"].split(",")[0] for c in report["checks"]] == [
        "verified download overhead over plain GET",
        "longest frame gap with a swap",
        "longest frame gap",
        "no-op `appliance ota check`",
    ]
    processes = report["process_ms"]  # whole processes, side by side in one run
    assert 0 < processes["python_startup"] < processes["noop_check"] < processes["full_check"]
    assert processes["noop_over_startup"] > 1


def test_bench_fuzz_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pricing", "bench", "fuzz", "--attacks", "220", "--sparse", "200", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)["fuzz"]
    assert report["unaccounted"] == 0 and report["reconnects"] == 0
    assert report["paced"]["attack_messages"] > 0 and report["flood"]["attack_messages"] == 420
    counts = report["service_counts"]
    assert counts["refused_packets"] >= 20 and counts["rejected_oversize"] >= 20  # both phases had them
    for phase in ("quiet", "paced", "flood"):
        assert report[phase]["honest_samples"] > 0 and report[phase]["honest_p99_ms"] > 0
    assert report["paced"]["rate"] == 1000.0 and report["flood"]["rate"] == "max"
    assert report["rss_mb"]["before"] > 20 and report["rss_mb"]["after"] > 20
    assert all(report["dedupe"][k] > 0 for k in ("in_order_us", "every_other_us", "random_us"))


GOOD_FUZZ = {
    "rss_growth_mb": 1.5,
    "paced": {"rate": 1000.0, "p99_ratio": 1.4},
    "reconnects": 0,
    "unaccounted": 0,
    "dedupe": {"ratio": 3.0},
}


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"rss_growth_mb": 120.0}, "RSS growth"),
        ({"paced": {"rate": 1000.0, "p99_ratio": 6.0}}, "honest p99"),
        ({"reconnects": 1}, "reconnects"),
        ({"unaccounted": 3}, "did not account"),
        ({"unaccounted": -3}, "did not account"),
        ({"dedupe": {"ratio": 4000.0}}, "dedupe"),
    ],
)
def test_each_fuzz_check_fails_on_a_bad_measurement(bad: dict[str, object], failing: str) -> None:
    assert all(c["ok"] for c in fuzz_checks(GOOD_FUZZ))
    checks = fuzz_checks({**GOOD_FUZZ, **bad})
    assert [c["check"] for c in checks if not c["ok"]] == [
        next(c["check"] for c in checks if failing in c["check"])
    ]


GOOD_OTA = {
    "overhead_ms_per_mb": 1.8,
    "frame_gap_ms": {"with_swap": 84.6, "without_swap": 78.2, "detection_interval": 200.0},
    "process_ms": {"noop_check": 210.0},
}


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"overhead_ms_per_mb": 25.0}, "verified download overhead"),
        (
            {"frame_gap_ms": {"with_swap": 250.0, "without_swap": 240.0, "detection_interval": 200.0}},
            "one detection",
        ),
        (
            {"frame_gap_ms": {"with_swap": 190.0, "without_swap": 78.2, "detection_interval": 200.0}},
            "with / without",
        ),
        (
            {"process_ms": {"noop_check": 420.0}},
            "no-op",
        ),  # the 0.4 s of loading LiteRT and OpenCV for nothing
    ],
)
def test_each_ota_check_fails_on_a_bad_measurement(bad: dict[str, object], failing: str) -> None:
    assert all(c["ok"] for c in ota_checks(GOOD_OTA))
    checks = ota_checks({**GOOD_OTA, **bad})
    assert [c["check"] for c in checks if not c["ok"]] == [
        next(c["check"] for c in checks if failing in c["check"])
    ]


def test_machine_load_has_load_average_and_cpu_pressure_at_start_and_end() -> None:
    psi = (
        "some avg10=8.98 avg60=7.22 avg300=13.72 total=4971\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert parse_pressure(psi) == {"avg10": 8.98, "avg60": 7.22}
    span = LoadSpan().report()
    for when in ("start", "end"):
        load = span[when]
        assert len(load["loadavg_1_5_15"]) == 3 and all(v >= 0 for v in load["loadavg_1_5_15"])
        if PRESSURE_CPU.exists():  # kernels without PSI report None
            assert set(load["cpu_pressure_some_pct"]) == {"avg10", "avg60"}
    assert "avg10" in load_line(span) and "at end" in load_line(span)

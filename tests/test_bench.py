"""The benchmark commands run and report every figure (their values are judged in docs/benchmarks.md,
never here: timing assertions in tests only measure how busy the CI machine is)."""

from __future__ import annotations

import json

from .cli_helpers import appliance

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
    ]

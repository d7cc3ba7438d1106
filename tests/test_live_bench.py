"""The live view's benchmark checks can fail: each is fed a bad measurement (the figures themselves are
judged in docs/benchmarks.md, never in a timed test)."""

from __future__ import annotations

from typing import Any

import pytest

from device.commands.bench_pipeline import pipeline_checks

from .test_bench import GOOD_PIPELINE, assert_only_failing

GOOD_LIVE: dict[str, Any] = {
    "one_over_none": {"median": 0.99},
    "ten_over_none": {"median": 0.97},
    "quote_to_tag_ms": {"p50": 8.0},
}


def with_live(**live: Any) -> dict[str, Any]:
    return {**GOOD_PIPELINE, "live": {**GOOD_LIVE, **live}}


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"one_over_none": {"median": 0.90}}, "one viewer watching"),
        ({"ten_over_none": {"median": 0.80}}, "ten viewers watching"),
        ({"quote_to_tag_ms": {"p50": 180.0}}, "price tag in the page's DOM"),
    ],
)
def test_each_live_view_check_fails_on_a_bad_measurement(bad: dict[str, Any], failing: str) -> None:
    assert all(c["ok"] for c in pipeline_checks(with_live()))
    assert_only_failing(pipeline_checks(with_live(**bad)), failing)


def test_without_chromium_the_tag_figure_says_why_and_is_no_check() -> None:
    checks = pipeline_checks(with_live(quote_to_tag_ms={"error": "no Chromium on this machine"}))
    assert not [c for c in checks if "DOM" in c["check"]]
    assert len([c for c in checks if "watching the live view" in c["check"]]) == 2

"""`appliance models report` (issue 18, item 3): the page is written by the real command on the smoke
sets and opened in headless Chromium (Debian's package, over the DevTools protocol), as a person would
open it; the fleet figures come from a real results database written by the fleet bench's own store."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.fleetbench.results import DeviceResult, record
from device.live.browser import Chromium
from device.modeleval.charts import Point, pareto
from device.vision.manifest import Manifest

from .cli_helpers import appliance
from .conftest import DATA

SMOKE = DATA / "coco-smoke"
RETRIEVAL = DATA / "retrieval-smoke"
EX_USAGE = 64
# A device kind with markup in it: the page must show it as text, never as HTML.
HOSTILE_KIND = 'Raspberry Pi 4 <b>Model B</b> & "Rev 1.4"'


# One worker runs this whole module (`make test` uses --dist loadgroup), so that its Chromium starts
# once, not on each worker that draws one of its tests.
pytestmark = pytest.mark.xdist_group("models-report")


def report(out: Path, state: Path, *args: str) -> None:
    env = {"APPLIANCE_RUNTIME__DEVICE": "cpu", "APPLIANCE_STATE_DIR": str(state)}
    result = appliance("models", "report", "--dataset", str(SMOKE), "--out", str(out), *args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "index.html")


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(width=1400, height=1200) as chromium:
        yield chromium


def page_state(browser: Chromium, page: Path) -> dict[str, Any]:
    browser.open(page.as_uri())
    # Images load after readyState may already say complete for the document: wait for each.
    browser.wait_for("[...document.images].every(i => i.complete)", 30, "the chart images to finish loading")
    state: dict[str, Any] = browser.evaluate(
        """({
        rows: [...document.querySelectorAll('#models tbody tr')].map(r => r.dataset.model),
        heads: [...document.querySelectorAll('#models thead th')].map(h => h.textContent),
        cells: Object.fromEntries([...document.querySelectorAll('#models tbody tr')].map(
            r => [r.dataset.model, [...r.cells].map(c => c.textContent)])),
        images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
        bold: document.querySelectorAll('b').length,
        scripts: document.scripts.length,
        external: [...document.querySelectorAll('[src],[href]')]
            .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => u.includes(':')),
        text: document.body.innerText,
        })"""
    )
    return state


@pytest.mark.heavy
def test_the_report_renders_a_row_per_model_and_its_charts(
    tmp_path: Path, browser: Chromium, manifest: Manifest
) -> None:
    out = tmp_path / "report"
    # One model of each family is enough to show the page (every manifest model is evaluated by
    # tests/test_models_eval.py); each one costs an evaluation and a local timing run.
    chosen = ["centernet-coco-float", "ssdlite-person-int8", "efficientnet-lite0-int8"]
    assert set(chosen) <= {e.id for e in manifest.entries}
    report(out, tmp_path / "state", "--retrieval", str(RETRIEVAL), "--models", *chosen)
    state = page_state(browser, out / "index.html")
    assert state["rows"] == chosen
    assert state["images"], "no chart on the page"
    for image in state["images"]:
        assert image["width"] > 0, f"chart {image['src']} did not load"
        assert (out / image["src"]).is_file()
    assert state["external"] == [] and state["scripts"] == 0
    assert "a smoke test of the chain, not a benchmark" in state["text"]
    assert "COCO val2017" in state["text"]
    assert "timed on this machine in this run" in state["text"]
    local = [h for h in state["heads"] if "local run" in h]
    assert len(local) == 1
    centernet = state["cells"]["centernet-coco-float"]
    assert centernet[4] == "0.620"  # mAP, as `models eval` gives it on the smoke set
    assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", centernet[9]), centernet  # p50 / p90, local run
    assert "1.000" in state["cells"]["efficientnet-lite0-int8"][7]  # recall@1
    figures = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in figures["rows"]] == state["rows"]


def _fleet_db(path: Path) -> Path:
    now = time.time()
    rows = [
        DeviceResult(
            "r1",
            device,
            HOSTILE_KIND,
            "cpu",
            "litert-cpu-xnnpack",
            model,
            4,
            50,
            p50,
            p50 * 1.2,
            1e3 / p50,
            now,
        )
        for device in ("shop-1", "shop-2")
        for model, p50 in (("ssdlite-person-int8", 21.0), ("centernet-coco-float", 140.0))
    ]
    rows.append(
        DeviceResult(
            "r1",
            "shop-3",
            "Raspberry Pi 5",
            "edgetpu-usb",
            "edgetpu",
            "ssdlite-person-int8",
            4,
            50,
            3.5,
            4.0,
            250.0,
            now,
        )
    )
    record(path, rows)
    return path


def test_with_a_fleet_database_the_columns_are_its_device_kinds_and_markup_stays_text(
    tmp_path: Path, browser: Chromium
) -> None:
    db = _fleet_db(tmp_path / "bench.sqlite")
    out = tmp_path / "report"
    models = ("--models", "ssdlite-person-int8", "centernet-coco-float")
    report(out, tmp_path / "state", "--bench-db", str(db), *models)
    state = page_state(browser, out / "index.html")
    assert state["rows"] == ["ssdlite-person-int8", "centernet-coco-float"]
    kinds = [h for h in state["heads"] if "fleet bench" in h]
    assert len(kinds) == 2
    assert any(HOSTILE_KIND in h for h in kinds)  # shown as text ...
    assert state["bold"] == 0  # ... and never parsed as markup
    assert not any("local run" in h for h in state["heads"])
    ssd = state["cells"]["ssdlite-person-int8"]
    assert "21.00 / 25.20" in " ".join(ssd) and "2 devices" in " ".join(ssd)
    assert "3.50 / 4.00" in " ".join(ssd)
    assert "—" in state["cells"]["centernet-coco-float"][-2]  # no Pi 5 figure for CenterNet
    assert len(state["images"]) == 2 and all(i["width"] > 0 for i in state["images"])
    assert f"from {db}" in state["text"]


def test_a_bench_database_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    result = appliance(
        "models", "report", "--dataset", str(SMOKE), "--out", str(tmp_path / "r"),
        "--bench-db", str(tmp_path / "missing.sqlite"), env={"APPLIANCE_RUNTIME__DEVICE": "cpu"},
    )  # fmt: skip
    assert result.returncode == EX_USAGE
    assert "missing.sqlite does not exist; run `appliance fleet bench` first" in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_file_that_is_not_a_bench_database_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "bench.sqlite"
    junk.write_bytes(b"not a database, just bytes" * 100)
    result = appliance(
        "models", "report", "--dataset", str(SMOKE), "--out", str(tmp_path / "r"),
        "--bench-db", str(junk), env={"APPLIANCE_RUNTIME__DEVICE": "cpu"},
    )  # fmt: skip
    assert result.returncode == EX_USAGE
    assert f"bench database {junk} cannot be read (file is not a database)" in result.stderr


def test_the_pareto_front_keeps_the_models_nothing_beats_on_both_axes() -> None:
    points = [
        Point("fast", 2.0, 0.30, 4.0),
        Point("slow-and-worse", 50.0, 0.25, 8.0),
        Point("best", 15.0, 0.60, 8.0),
        Point("same-but-slower", 20.0, 0.60, 8.0),
        Point("middle", 9.0, 0.45, 12.0),
    ]
    assert [p.model for p in pareto(points)] == ["fast", "middle", "best"]

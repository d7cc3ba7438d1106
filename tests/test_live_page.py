"""The live page in a real headless Chromium (Debian's package, over the DevTools protocol), on a real
daemon on the demo source, with a real mosquitto and the pricing service: what a person in front of
the device sees is what the device published."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from device.live.browser import Chromium
from device.wire import decode
from pricing.build import build_demo

from .broker import Mosquitto
from .conftest import MODELS, ROOT
from .daemons import STARTED
from .test_live_api import TOKEN, TOPIC, Live, start_live

SCREENSHOT = ROOT / "docs" / "live-view.png"


# One worker runs this whole module (`make test` uses --dist loadgroup), so that its rig (a broker,
# the pricing service, a daemon and Chromium) starts once, not on each worker that draws one of its tests.
pytestmark = pytest.mark.xdist_group("live-page")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Chromium]]:
    """Broker, pricing service, daemon (with a token) and browser, shared by this module's tests: the
    daemon and the browser take seconds to start, and the tests only look at what they show."""
    tmp = tmp_path_factory.mktemp("live-page")
    with contextlib.ExitStack() as cleanup:  # each part stopped even if stopping another one failed
        broker = Mosquitto(tmp)
        broker.start()
        cleanup.callback(broker.stop)
        catalog = tmp / "catalog.sqlite"
        build_demo(
            ROOT / "demo",
            catalog,
            MODELS / "manifest.toml",
            "efficientnet-lite0-int8",
            "centernet-coco-float",
        )
        service = subprocess.Popen(
            [sys.executable, "-m", "pricing", "run", "--port", str(broker.port), "--catalog", str(catalog)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cleanup.callback(_end, service)
        live = start_live(broker, tmp)
        # This daemon lives as long as the module: kept off the per-test reaper's list, stopped here.
        STARTED.remove(live.process)
        cleanup.callback(_end, live.process)
        cleanup.callback(live.collector.close)
        browser = cleanup.enter_context(Chromium())
        browser.screen(1920, 1080)
        browser.open(f"{live.base}/#token={TOKEN}")
        yield live, browser


def _end(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def quotes(live: Live) -> dict[int, dict[str, Any]]:
    return {m.json()["seq"]: m.json() for m in live.collector.on(f"{TOPIC}/quotes")}


def objects(live: Live) -> dict[int, Any]:
    return {decode(m.payload).seq: decode(m.payload) for m in live.collector.on(f"{TOPIC}/objects")}


def test_the_frame_changes_and_boxes_carry_the_published_labels(rig: tuple[Live, Chromium]) -> None:
    live, browser = rig
    browser.wait_for("live.frames >= 3", 60, "3 frames shown")
    first = browser.evaluate("live.index")
    # The demo turns to its next photo every few seconds: several different pictures, later frames.
    browser.wait_for(f"live.index > {first} && live.sizes.length >= 3", 30, "newer, different frames")
    assert browser.evaluate("document.getElementById('frame').naturalWidth") == 640
    browser.wait_for("document.querySelectorAll('.box:not(.gone)').length > 0", 30, "a box")
    shown = browser.evaluate(
        "[...document.querySelectorAll('.box:not(.gone)')]"
        ".map(b => [Number(b.dataset.track), b.dataset.label])"
    )
    live.collector.wait_for(
        lambda: {t for t, _ in shown} <= {o.track_id for o in objects(live).values()},
        30,
        "those tracks on MQTT",
    )
    published = {o.track_id: o.label for o in objects(live).values()}
    for track, label in shown:
        assert published[track] == label


@pytest.mark.heavy
def test_the_price_tag_shows_the_quote_received_on_mqtt(rig: tuple[Live, Chromium]) -> None:
    live, browser = rig
    tag = browser.wait_for(
        "(() => { const t = document.querySelector('.box:not(.gone) .tag[data-avg]');"
        " return t && {seq: Number(t.dataset.seq), avg: Number(t.dataset.avg),"
        " median: Number(t.dataset.median),"
        " through: Number(t.dataset.sellThrough), n: Number(t.dataset.n), text: t.textContent,"
        " track: Number(t.parentElement.dataset.track)}; })()",
        60,
        "a price tag",
    )
    live.collector.wait_for(lambda: tag["seq"] in quotes(live), 10, "the tag's quote on MQTT")
    quote = quotes(live)[tag["seq"]]
    assert quote["track_id"] == tag["track"]
    assert (tag["avg"], tag["median"], tag["through"], tag["n"]) == (
        quote["avg_sold_price"],
        quote["median_sold_price"],
        quote["sell_through"],
        quote["n"],
    )
    assert quote["currency"] == "JPY"
    assert f"¥{round(quote['avg_sold_price']):,}" in tag["text"]
    assert f"¥{round(quote['median_sold_price']):,}" in tag["text"]
    assert (
        f"{round(quote['sell_through'] * 100)}% sell-through" in tag["text"]
        and f"n={quote['n']}" in tag["text"]
    )


def test_the_panel_shows_the_pace_reason_and_the_models(rig: tuple[Live, Chromium]) -> None:
    live, browser = rig
    browser.wait_for(
        "document.getElementById('pace-reason').textContent !== '–'", 30, "the pace in the panel"
    )
    reasons = {s["pace"]["reason"] for s in live.stats()}
    assert browser.evaluate("document.getElementById('pace-reason').textContent") in reasons
    models = browser.evaluate("[...document.querySelectorAll('#models li')].map(li => li.textContent)")
    status = live.collector.on(f"{TOPIC}/status")[-1].json()["models"]
    for kind in ("detector", "embedder"):
        m = status[kind]
        assert f"{kind}: {m['id']} {m['version']} on {m['accelerator']}" in models
    assert browser.evaluate("document.getElementById('link').textContent") == "connected"


def test_screenshots_at_1080p_and_on_a_phone_are_not_blank(
    rig: tuple[Live, Chromium], tmp_path: Path
) -> None:
    _, browser = rig
    browser.screen(1920, 1080)
    browser.wait_for("!!document.querySelector('.box:not(.gone) .tag[data-avg]')", 60, "a priced box")
    png = browser.screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the screenshot is no PNG"
    assert image.shape[:2] == (1080, 1920)
    assert float(image.std()) > 20 and len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 500  # a picture
    # The README's picture comes from this test, at 1280x720 to keep the repository small: written to
    # docs/ only with UPDATE_SCREENSHOT=1, so that a test run leaves no changed binary in the work tree.
    browser.screen(1280, 720)
    readme = browser.screenshot()
    small = cv2.imdecode(np.frombuffer(readme, np.uint8), cv2.IMREAD_COLOR)
    assert small is not None and small.shape[:2] == (720, 1280) and float(small.std()) > 20
    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    target.write_bytes(readme)
    # A phone: one column, the picture and its boxes first, nothing wider than the screen.
    browser.screen(390, 844, mobile=True)
    layout = browser.wait_for(
        "(() => { const s = document.getElementById('stage').getBoundingClientRect();"
        " const p = document.getElementById('panel').getBoundingClientRect();"
        " return s.width > 300 && {stage: s.width, below: p.top >= s.bottom,"
        " wide: document.documentElement.scrollWidth}; })()",
        10,
        "the phone layout",
    )
    assert layout["below"] and layout["wide"] <= 390 and layout["stage"] <= 390
    phone = cv2.imdecode(np.frombuffer(browser.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    assert phone is not None, "the screenshot is no PNG"
    assert phone.shape[1] == 390 and float(phone.std()) > 20
    browser.screen(1920, 1080)


def test_every_asset_comes_from_the_device(rig: tuple[Live, Chromium]) -> None:
    _, browser = rig
    sources = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert sources and all(s.startswith(browser.evaluate("location.origin")) for s in sources)
    for asset in (ROOT / "device" / "live" / "static").iterdir():
        assert "http://" not in asset.read_text() and "https://" not in asset.read_text(), asset.name


def test_pause_from_the_page_stops_processed_and_resume_restarts_it(rig: tuple[Live, Chromium]) -> None:
    live, browser = rig
    browser.wait_for("!document.getElementById('actions').hidden", 10, "the operator's buttons")
    browser.evaluate("document.getElementById('pause').click()")
    live.collector.wait_for(lambda: live.stats()[-1]["pace"]["paused"], 10, "stats saying paused")
    held = len(live.stats())
    live.collector.wait_for(lambda: len(live.stats()) >= held + 2, 10, "2 more stats while paused")
    paused = live.stats()[held - 1 :]
    assert len({s["totals"]["processed"] for s in paused[1:]}) == 1 and paused[-1]["fps"]["processed"] == 0
    assert paused[-1]["pace"]["reason"] == "paused by operator"
    browser.wait_for(
        "document.getElementById('pace').textContent === 'paused'", 10, "the panel saying paused"
    )
    browser.evaluate("document.getElementById('resume').click()")
    live.collector.wait_for(
        lambda: live.stats()[-1]["totals"]["processed"] > paused[-1]["totals"]["processed"],
        10,
        "frames again",
    )
    assert json.loads(json.dumps(live.stats()[-1]["pace"]))["paused"] is False

"""Pricing: quote arithmetic, refusals, the service's request handling, catalogs from CSV."""

from __future__ import annotations

import logging
import math
import random
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from device.wire import ObjectMessage, WireError, decode, encode
from pricing.build import build_from_csv, load_embedder
from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog
from pricing.catalogs import Catalogs
from pricing.config import ServiceConfig
from pricing.errors import CatalogError, ServiceConfigError
from pricing.index import ExactIndex, HnswIndex
from pricing.pricer import Pricer
from pricing.service import REPLIES_QUEUED, PricingService, Reply, Request, _epoch
from pricing.sign_index import SignHnswIndex

from .conftest import DATA

INFO = CatalogInfo("test-embedder", "2.0.0", 4, synthetic=False)


def vec(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}b", *values)


def unit_at(angle_deg: float) -> bytes:
    """A 4-d vector at `angle_deg` from (1, 0, 0, 0) in the first plane: cosine = cos(angle)."""
    a = math.radians(angle_deg)
    return vec(round(100 * math.cos(a)), round(100 * math.sin(a)), 0, 0)


def catalog_file(tmp_path: Path, items: list[Item]) -> Path:
    path = tmp_path / "catalog.sqlite"
    write_catalog(path, INFO, items)
    return path


def query(vector: bytes, model: tuple[str, str] = ("test-embedder", "2.0.0"), seq: int = 1) -> ObjectMessage:
    return ObjectMessage(seq, 0, 3, 41, "cup", 0.8, (0.1, 0.1, 0.5, 0.5), model[0], model[1], 0.01, 0, vector)


def item(name: str, angle: float, price: float, status: str, currency: str = "JPY") -> Item:
    return Item(name, unit_at(angle), 0.01, 0, price, currency, status)


@pytest.fixture()
def hand_made(tmp_path: Path) -> Pricer:
    items = [
        item("a", 0, 1000, "sold"),  # similarity 1.0
        item("b", 25.8, 2000, "sold"),  # ~0.9
        item("c", 36.9, 4000, "listed"),  # ~0.8
        item("d", 45.6, 3000, "sold", currency="USD"),  # ~0.7, another currency
        item("e", 84.3, 9999, "sold"),  # ~0.1: not similar
    ]
    config = ServiceConfig(index="exact", k=10, min_similarity=0.5, min_neighbours=3)
    return Pricer(load_catalog(catalog_file(tmp_path, items)), config)


def test_quote_arithmetic_on_a_hand_made_catalog(hand_made: Pricer) -> None:
    quote = hand_made.quote(query(unit_at(0)))
    assert quote.status == "ok" and quote.n == 4  # e is below min_similarity
    sims = {n["id"]: n["similarity"] for n in quote.neighbours}
    assert sims["a"] == pytest.approx(1.0, abs=0.01) and sims["c"] == pytest.approx(0.8, abs=0.01)
    # Sold in the majority currency: a (1000) and b (2000); d's USD price is not mixed in.
    assert (quote.currency, quote.avg_sold_price, quote.median_sold_price) == ("JPY", 1500.0, 1500.0)
    w = [sims[k] for k in "abcd"]
    assert quote.sell_through == pytest.approx((w[0] + w[1] + w[3]) / sum(w), abs=1e-3)
    n_eff = sum(w) ** 2 / sum(x * x for x in w)
    assert quote.confidence == pytest.approx(sum(w) / 4 * (1 - math.exp(-n_eff / 3)), abs=1e-3)
    assert [n["id"] for n in quote.neighbours] == ["a", "b", "c", "d"]


def test_too_few_similar_items_is_insufficient_data(hand_made: Pricer) -> None:
    quote = hand_made.quote(query(unit_at(120)))  # only e (at 84 degrees, cosine 0.81) is similar
    assert quote.status == "insufficient_data" and quote.n == 1
    assert [n["id"] for n in quote.neighbours] == ["e"]  # what was found is still shown
    far = hand_made.quote(query(vec(0, 0, 100, 0)))  # orthogonal to everything
    assert far.status == "insufficient_data" and far.n == 0 and far.avg_sold_price is None
    assert "at least 3 similar" in far.reason


def test_no_sold_neighbour_is_insufficient_data(tmp_path: Path) -> None:
    items = [item(f"l{i}", i, 100, "listed") for i in range(5)]
    pricer = Pricer(load_catalog(catalog_file(tmp_path, items)), ServiceConfig(index="exact"))
    quote = pricer.quote(query(unit_at(0)))
    assert quote.status == "insufficient_data" and quote.n == 5 and "0 sold" in quote.reason


def test_another_embedder_version_is_refused(hand_made: Pricer) -> None:
    quote = hand_made.quote(query(unit_at(0), model=("test-embedder", "2.1.0")))
    assert quote.status == "refused"
    assert "test-embedder 2.1.0" in quote.reason and "test-embedder 2.0.0" in quote.reason


def test_hnsw_agrees_with_exact_on_a_clustered_catalog() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(50, 64))
    data = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 64))
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    vectors = np.clip(np.rint(unit * 127), -127, 127).astype(np.int8)
    exact, approx = ExactIndex(vectors), HnswIndex(vectors)
    hits = 0
    for q in vectors[rng.integers(0, 5000, 50)]:
        hits += len(set(exact.search(q, 10)[0].tolist()) & set(approx.search(q, 10)[0].tolist()))
    assert hits / 500 >= 0.95
    ids, sims = approx.search(vectors[0], 5)
    assert ids[0] == 0 and sims[0] == pytest.approx(1.0, abs=0.02)


def relu_like_catalog(rng: np.random.Generator, items: int = 5000, dim: int = 256) -> npt.NDArray[np.int8]:
    """Clustered vectors that are all positive, as the embedder's ReLU6 features are."""
    centres = np.abs(rng.normal(size=(50, dim)))
    data = np.abs(centres[rng.integers(0, 50, items)] + 0.3 * rng.normal(size=(items, dim)))
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    vectors: npt.NDArray[np.int8] = np.clip(np.rint(unit * 127), -127, 127).astype(np.int8)
    return vectors


def test_sign_index_finds_the_exact_neighbours_of_all_positive_vectors() -> None:
    """Every value is positive, so a code of plain signs would be all ones and find nothing: the
    codes must be taken about the catalog's mean."""
    rng = np.random.default_rng(4)
    vectors = relu_like_catalog(rng)
    exact, approx = ExactIndex(vectors), SignHnswIndex(vectors)
    hits = 0
    for q in vectors[rng.integers(0, len(vectors), 50)]:
        hits += len(set(exact.search(q, 10)[0].tolist()) & set(approx.search(q, 10)[0].tolist()))
    assert hits / 500 >= 0.95


def test_sign_index_reports_the_exact_cosines_best_first() -> None:
    rng = np.random.default_rng(5)
    vectors = relu_like_catalog(rng, items=2000)
    exact, approx = ExactIndex(vectors), SignHnswIndex(vectors)
    query = vectors[7]
    ids, sims = approx.search(query, 10)
    truth = dict(zip(*(a.tolist() for a in exact.search(query, len(vectors))), strict=True))
    assert ids[0] == 7 and list(sims) == sorted(sims, reverse=True)
    assert [truth[i] for i in ids.tolist()] == pytest.approx(sims.tolist(), abs=1e-6)


def test_sign_index_on_an_empty_and_a_tiny_catalog() -> None:
    rng = np.random.default_rng(6)
    vectors = relu_like_catalog(rng, items=3)
    assert len(SignHnswIndex(vectors[:0]).search(vectors[0], 5)[0]) == 0
    ids, sims = SignHnswIndex(vectors).search(vectors[1], 20)
    assert sorted(ids.tolist()) == [0, 1, 2] and ids[0] == 1 and sims[0] == pytest.approx(1.0, abs=0.01)


def service(pricer: Pricer) -> PricingService:
    return PricingService(pricer.config, pricer)


def request(payload: bytes, device: str = "shop-1", response: str | None = None) -> Request:
    return Request(f"appliance/{device}/objects", payload, response, b"\x01" * 8, None, time.perf_counter())


def test_service_answers_on_the_response_topic_with_the_correlation(hand_made: Pricer) -> None:
    svc = service(hand_made)
    reply = svc.handle(request(encode(query(unit_at(0))), response="appliance/shop-1/quotes"))
    assert reply is not None and reply.topic == "appliance/shop-1/quotes" and reply.correlation == b"\x01" * 8
    assert b'"avg_sold_price": 1500.0' in reply.payload and b'"device_id": "shop-1"' in reply.payload


def test_another_format_version_is_rejected_by_its_content_type(hand_made: Pricer) -> None:
    svc = service(hand_made)
    future = replace(request(encode(query(unit_at(0)))), content_type="application/vnd.appliance.object.v2")
    assert svc.handle(future) is None and svc.counts["rejected_content_type"] == 1


def test_a_response_topic_outside_the_device_is_not_honoured(hand_made: Pricer) -> None:
    reply = service(hand_made).handle(request(encode(query(unit_at(0))), response="appliance/other/quotes"))
    assert reply is not None and reply.topic == "appliance/shop-1/quotes"


def test_duplicates_are_answered_once(hand_made: Pricer) -> None:
    svc = service(hand_made)
    payload = encode(query(unit_at(0), seq=7))
    assert svc.handle(request(payload)) is not None
    assert svc.handle(request(payload)) is None
    assert svc.handle(request(payload, device="shop-2")) is not None  # another device's seq 7
    assert svc.dedupe.duplicates == 1


def _with_scale(payload: bytes, scale: float) -> bytes:
    data = bytearray(payload)
    struct.pack_into("<f", data, len(payload) - 4 - 2 - 2 - 4, scale)  # 4-d vector, dim, zero point, scale
    return bytes(data)


@pytest.mark.parametrize("scale", [math.inf, -math.inf, math.nan, 0.0, -0.01])
def test_a_vector_with_a_scale_that_is_not_a_positive_number_is_refused_never_quoted(
    hand_made: Pricer, scale: float
) -> None:
    svc = service(hand_made)
    bad = _with_scale(encode(query(unit_at(0))), scale)
    with pytest.raises(WireError, match="scale"):
        decode(bad)
    assert svc.handle(request(bad)) is None
    assert svc.counts["rejected_malformed"] == 1 and svc.counts["ok"] == 0


def test_a_huge_scale_gives_the_same_quote_as_a_small_one(hand_made: Pricer) -> None:
    """Cosine does not depend on a positive scale; 1e38 used to overflow float32 into NaN."""
    small = hand_made.quote(query(unit_at(10)))
    huge = hand_made.quote(replace(query(unit_at(10)), scale=1e38))
    tiny = hand_made.quote(replace(query(unit_at(10)), scale=1e-38))
    assert small.status == "ok" and huge == small and tiny == small


def test_ten_thousand_random_and_mutated_payloads_never_crash(hand_made: Pricer) -> None:
    svc = service(hand_made)
    rng = random.Random(11)
    golden = (DATA / "wire" / "small.bin").read_bytes()
    seq = 100
    for i in range(10_000):
        if i % 2:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        else:
            mutated = bytearray(golden)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            payload = bytes(mutated[: rng.randrange(len(mutated) + 1)])
        topic_device = "shop-9" if i % 7 else "a/b"  # some on a topic with an extra level
        svc.handle(request(payload, device=topic_device))
        seq += 1
    counts = svc.stats()["counts"]
    assert counts["received"] == 10_000
    outcomes = sum(
        counts.get(k, 0)
        for k in ("rejected_malformed", "rejected_topic", "duplicates", "ok", "insufficient_data", "refused")
    )
    assert outcomes == 10_000, counts
    assert counts["rejected_malformed"] > 8000
    good = service(hand_made).handle(request(encode(query(unit_at(0), seq=1))))
    assert good is not None  # still serving


def test_catalog_from_csv(tmp_path: Path, embedder_dir: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "id,image,price,currency,status,sold_at,category\n"
        f"cup-1,{DATA / 'coffee.png'},1200,jpy,sold,2026-10-01,kitchen\n"
        f"cat-1,{DATA / 'chelsea.png'},9000,JPY,listed,,\n"
    )
    embedder = load_embedder(embedder_dir / "manifest.toml", "efficientnet-lite0-int8")
    assert build_from_csv(tmp_path / "items.csv", tmp_path / "c.sqlite", embedder) == 2
    catalog = load_catalog(tmp_path / "c.sqlite")
    assert catalog.ids == ["cup-1", "cat-1"] and catalog.currencies == ["JPY", "JPY"]
    assert catalog.info.model_id == "efficientnet-lite0-int8" and catalog.info.dim == 1280
    assert list(catalog.sold) == [True, False]


def test_bad_csv_rows_are_all_reported_and_nothing_is_written(tmp_path: Path, embedder_dir: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "id,image,price,currency,status\n"
        f"ok,{DATA / 'coffee.png'},1,JPY,sold\n"
        "x,missing.png,1,JPY,sold\n"
        f"y,{DATA / 'coffee.png'},-5,JPY,sold\n"
        f"z,{DATA / 'coffee.png'},5,JPY,maybe\n"
    )
    embedder = load_embedder(embedder_dir / "manifest.toml", "efficientnet-lite0-int8")
    with pytest.raises(CatalogError) as info:
        build_from_csv(tmp_path / "items.csv", tmp_path / "c.sqlite", embedder)
    text = str(info.value)
    assert (
        "3 bad row(s)" in text and "items.csv:3" in text and "items.csv:4" in text and "items.csv:5" in text
    )
    assert not (tmp_path / "c.sqlite").exists()
    (tmp_path / "bad.csv").write_text("id,price\n1,2\n")
    with pytest.raises(CatalogError, match="missing column"):
        build_from_csv(tmp_path / "bad.csv", tmp_path / "c.sqlite", embedder)


def test_loading_a_missing_or_broken_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "none.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"junk" * 100)
    with pytest.raises(CatalogError, match="not a readable catalog"):
        load_catalog(tmp_path / "junk.sqlite")


def test_golden_vector_decodes_for_the_service() -> None:
    message = decode((DATA / "wire" / "full_1280.bin").read_bytes())
    assert replace(message, seq=1).dim == 1280


def test_each_embedder_version_is_priced_from_its_own_catalog(tmp_path: Path) -> None:
    """A staged embedder rollout: devices on 2.0.0 and on 2.1.0 both get quotes, each from the catalog
    built with their embedder; a third version is refused with the versions the service has."""
    config = ServiceConfig(index="exact", k=10, min_similarity=0.5, min_neighbours=1)
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    write_catalog(old, INFO, [item("old-cup", 0, 1000, "sold")])
    write_catalog(
        new, CatalogInfo("test-embedder", "2.1.0", 4, synthetic=False), [item("new-cup", 0, 3000, "sold")]
    )
    catalogs = Catalogs([Pricer(load_catalog(p), config) for p in (old, new)])
    assert catalogs.items == 2
    quote, used = catalogs.quote(query(unit_at(0), ("test-embedder", "2.0.0")))
    assert quote.avg_sold_price == 1000 and used is not None and used.catalog.info.model_version == "2.0.0"
    quote, _ = catalogs.quote(query(unit_at(0), ("test-embedder", "2.1.0")))
    assert quote.avg_sold_price == 3000
    quote, used = catalogs.quote(query(unit_at(0), ("test-embedder", "3.0.0")))
    assert quote.status == "refused" and used is None
    assert "made with test-embedder 2.0.0, test-embedder 2.1.0" in quote.reason
    with pytest.raises(ServiceConfigError, match=r"two catalogs were built with test-embedder 2\.0\.0"):
        Catalogs([Pricer(load_catalog(old), config), Pricer(load_catalog(old), config)])


def test_the_catalog_setting_takes_one_path_or_several() -> None:
    assert ServiceConfig(catalog="a.sqlite").catalog == (Path("a.sqlite"),)
    assert ServiceConfig(catalog=["a.sqlite", "b.sqlite"]).catalog == (Path("a.sqlite"), Path("b.sqlite"))


def test_one_huge_seq_does_not_silence_a_device(hand_made: Pricer) -> None:
    svc = service(hand_made)
    assert svc.handle(request(encode(query(unit_at(0), seq=2**64 - 1)))) is not None
    answered = [svc.handle(request(encode(query(unit_at(0), seq=s)))) for s in range(1, 11)]
    assert all(a is not None for a in answered)


def test_a_device_numbering_afresh_under_a_new_epoch_is_answered(hand_made: Pricer) -> None:
    svc = service(hand_made)
    old, new = "00000000000000aa", "00000000000000bb"
    for seq in range(1, 6):
        assert svc.handle(replace(request(encode(query(unit_at(0), seq=seq))), epoch=old)) is not None
    # Its state wiped: seq 1 again, under a new epoch, is answered; a repeat in that epoch is not.
    assert svc.handle(replace(request(encode(query(unit_at(0), seq=1))), epoch=new)) is not None
    assert svc.handle(replace(request(encode(query(unit_at(0), seq=1))), epoch=new)) is None
    assert svc.dedupe.resets == 1 and svc.dedupe.duplicates == 1


def test_a_payload_larger_than_any_catalog_vector_is_refused_on_arrival(hand_made: Pricer) -> None:
    svc = service(hand_made)
    big = Request("appliance/shop-1/objects", b"", None, None, None, time.perf_counter(), size=60_000)
    assert svc.handle(big) is None and svc.counts["rejected_oversize"] == 1


def test_an_epoch_is_sixteen_lowercase_hex_digits_or_none() -> None:
    """The epoch keys a device's dedupe window: anything but the device's own form (secrets.token_hex(8))
    counts as no epoch, so a device cannot mint windows from arbitrary strings of the right length."""
    assert _epoch([("epoch", "0badc0de00000001")]) == "0badc0de00000001"
    for bad in (
        "zzzzzzzzzzzzzzzz",
        "0badc0de0000000g",
        "0BADC0DE00000001",
        " badc0de0000001 ",
        "0x" + "0" * 14,
    ):
        assert _epoch([("epoch", bad)]) == "", bad
    assert _epoch([("epoch", "0badc0de")]) == "" and _epoch([("other", "0badc0de00000001")]) == ""
    assert _epoch(None) == ""


def test_repeats_and_epoch_changes_are_logged_at_a_falling_rate(
    hand_made: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    """Nine copies of one message: eight repeats, logged at the 1st, 2nd, 4th and 8th only; a new epoch is
    logged too. A device resending in a loop costs a few journal lines, and each carries the count."""
    svc = service(hand_made)
    payload = encode(query(unit_at(0), seq=3))
    with caplog.at_level(logging.WARNING, logger="pricing.service"):
        assert svc.handle(request(payload)) is not None
        assert all(svc.handle(request(payload)) is None for _ in range(8))
        assert svc.handle(replace(request(payload), epoch="00000000000000bb")) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "pricing.service"]
    repeats = [line for line in lines if "seq 3 (epoch -) again" in line]
    assert repeats == [f"from shop-1: seq 3 (epoch -) again ({n} so far)" for n in (1, 2, 4, 8)]
    assert "shop-1 numbers its messages afresh, epoch 00000000000000bb (1 so far)" in lines
    assert svc.dedupe.duplicates == 8 and len(lines) == 5


def test_quotes_the_broker_has_not_acknowledged_are_capped_and_the_rest_counted(
    hand_made: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    """paho keeps every QoS 1 publish until its PUBACK; with no broker at all (the extreme of one that
    acknowledges slower than a flood is answered) they pile up. Past REPLIES_QUEUED, each is dropped and
    counted instead of growing the service's memory."""
    quotes = service(hand_made)
    for seq in range(REPLIES_QUEUED + 5):
        quotes.send_reply(Reply("appliance/dev/quotes", b"{}", seq.to_bytes(8, "little")))
    assert quotes.counts["reply_backlog"] == 5
    assert len(quotes._client._out_messages) == REPLIES_QUEUED  # paho's own queue, not a copy of it
    assert [r.getMessage().count("dropped") for r in caplog.records] == [1, 1, 1]  # the 1st, 2nd, 4th

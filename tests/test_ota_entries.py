"""What a careless publisher or a hostile server can put in a signed repository, beyond bad signatures: a
malformed entry beside good ones, a halt for another model, a pin over a firmware limit, a release that
fails validation again and again, an npz that unpacks to gigabytes. Each outcome has one exit code and
one journal entry (docs/ota.md's table). Real repositories made by the release tool, a real HTTP server,
the real models and the real CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from release.publish import NewRelease, _expected, _small, add_release, change
from release.repository import Repository
from tuf.api.metadata import Targets

from device.errors import UpdateError
from device.images import read_image
from device.ota.engine import Engine
from device.ota.journal import OUTCOMES, Outcome

from .broker import Mosquitto
from .conftest import MODELS, ROOT
from .ota_helpers import (
    EMBEDDER,
    PHOTOS,
    SERVERS,
    Serve,
    daemon_rig,
    new_repo,
    ota_config,
    ota_env,
    release,
    serve,
)

BOTH = {"APPLIANCE_OTA__KINDS": '["detector", "embedder"]'}
# Refusals where what happens to the connection matters (a body left unread, more requests after it) also
# run against nginx: HTTP/1.1, every request of a check over one kept-alive connection.
BOTH_SERVERS = pytest.mark.parametrize("server", list(SERVERS.values()), ids=list(SERVERS))


class CarelessRepository(Repository):
    """The release tool's repository with a hand-edited index, as a careless publisher signs one."""

    extra: tuple[str, ...] = ()
    body: bytes | None = None

    def _set_index(self, targets: Targets, releases: list[str]) -> None:
        if self.body is not None:
            self.add_data(targets, "index.json", self.body)
        else:
            super()._set_index(targets, [*releases, *self.extra])


def careless(repo: Repository, tmp_path: Path) -> CarelessRepository:
    return CarelessRepository(repo.path, tmp_path / "keys")


def check(url: str, repo: Repository, state: Path, **extra: Any) -> tuple[Engine, list[Outcome]]:
    progress = extra.pop("progress", None)
    engine = Engine(ota_config(url, repo, state, **extra), progress=progress)
    outcomes, _ = engine.check()
    return engine, outcomes


def by_kind(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.kind: o for o in outcomes if o.kind}


# The measured child is spawned by a small launcher, not by the test process: a child's ru_maxrss
# includes the address space it was forked (or vforked) from until its exec, which late in a test run
# is pytest's own few hundred MB.
LAUNCHER = """
import os, sys
child = os.posix_spawn(sys.executable, [sys.executable, "-m", "device", "ota", *sys.argv[2:]], os.environ)
_, status, usage = os.wait4(child, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str, float]:
    """`appliance ota ARGS` as a process of its own: exit code, stdout, stderr and its peak RSS in MB
    (ru_maxrss from wait4, in KiB on Linux)."""
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}, **env}
    with tempfile.TemporaryDirectory() as scratch:
        peak, out, err = Path(scratch, "peak"), Path(scratch, "out"), Path(scratch, "err")
        with out.open("wb") as stdout, err.open("wb") as stderr:
            run = subprocess.run(
                [sys.executable, "-c", LAUNCHER, str(peak), *args],
                cwd=ROOT,
                env=environ,
                stdout=stdout,
                stderr=stderr,
                timeout=180,  # a hang fails the test instead of blocking it
                check=False,
            )
        return run.returncode, out.read_text(), err.read_text(), int(peak.read_text()) / 1024


def status(env: dict[str, str]) -> dict[str, Any]:
    code, out, err, _ = cli(env, "status", "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


# -- 3. one malformed entry never blocks the rest ---------------------------------------------------
@BOTH_SERVERS
def test_an_index_entry_without_a_release_field_is_skipped_recorded_once_and_the_rest_is_taken(
    tmp_path: Path, server: Serve
) -> None:
    repo = careless(new_repo(tmp_path), tmp_path)
    release(repo)
    stray = "models/embedder/stray/1.0.0/stray.tflite"
    targets = repo.targets()
    repo.add_data(targets.signed, stray, b"no custom field")  # signed, listed, but no release in it
    repo.extra = (stray,)
    repo.publish(targets)
    state = tmp_path / "state"
    with server(repo.path, None) as url:
        engine, outcomes = check(url, repo, state)
        assert by_kind(outcomes)["embedder"].outcome == "activated"
        [bad] = [o for o in outcomes if o.outcome == "rejected"]
        assert stray in bad.reason
        engine, _ = check(url, repo, state)  # the same bad entry again
    bad_entries = [o for o in engine.journal.state.history if stray in o.reason]
    assert len(bad_entries) == 1, "a bad entry is recorded once, not at every check"
    assert stray in json.dumps(engine.journal.summary())  # and status still names it


def test_an_index_without_a_list_of_releases_is_refused_not_an_internal_error(tmp_path: Path) -> None:
    repo = careless(new_repo(tmp_path), tmp_path)
    release(repo)
    repo.body = b'{"releases": null}'
    repo.publish(repo.targets())
    state = tmp_path / "state"
    with serve(repo.path) as url:
        with pytest.raises(UpdateError, match=r"index\.json"):
            check(url, repo, state)
        code, _, err, _ = cli(ota_env(url, repo, state), "check")
    assert code == 65 and "internal error" not in err and "index.json" in err, err


def test_detector_vectors_without_boxes_are_refused_and_the_embedder_beside_them_is_taken(
    tmp_path: Path,
) -> None:
    def no_boxes(fields: dict[str, Any]) -> None:
        for photo in fields["validation"]["expected"]:
            for detection in photo["detections"]:
                del detection["box"]

    repo = new_repo(tmp_path)
    release(repo, model_id="centernet-coco-float", photos=[PHOTOS[0]], edit=no_boxes)
    release(repo)
    assert '"label":"cup"' in repo.targets().to_bytes().decode().replace("\\", "")  # there were boxes
    with serve(repo.path) as url:
        engine, outcomes = check(url, repo, tmp_path / "state", **BOTH)
    assert by_kind(outcomes)["embedder"].outcome == "activated"
    [bad] = [o for o in outcomes if o.outcome == "rejected"]
    assert (bad.kind, bad.version) == ("detector", "1.1.0") and "box" in bad.reason, bad
    assert engine.slots.current("detector") is None


def test_detector_vectors_that_expect_nothing_are_refused_on_the_device_too(tmp_path: Path) -> None:
    """The release tool refuses them (issue 12, point 6); a device must not rely on the tool: vectors
    expecting no detection on any photo would pass a detector that never fires."""

    def nothing(fields: dict[str, Any]) -> None:
        for photo in fields["validation"]["expected"]:
            photo["detections"] = []

    repo = new_repo(tmp_path)
    release(repo, model_id="centernet-coco-float", photos=[PHOTOS[0]], edit=nothing)
    release(repo)
    with serve(repo.path) as url:
        engine, outcomes = check(url, repo, tmp_path / "state", **BOTH)
    assert by_kind(outcomes)["embedder"].outcome == "activated"
    [bad] = [o for o in outcomes if o.outcome == "rejected"]
    assert bad.kind == "detector" and "prove nothing" in bad.reason, bad
    assert engine.slots.current("detector") is None


# -- 4. a halt is for one model ---------------------------------------------------------------------
def test_halting_another_model_at_the_same_version_leaves_the_running_one_alone(tmp_path: Path) -> None:
    model = MODELS / "efficientnet_lite0_int8_embedder.tflite"
    text = (MODELS / "manifest.toml").read_text()
    entry = text[text.index('id = "efficientnet-lite0-int8"') :].split("[[model]]")[0]
    other = entry.replace('id = "efficientnet-lite0-int8"', 'id = "other-embedder"')
    other = re.sub(r'file = ".*"', f'file = "{model}"', other)
    manifest = tmp_path / "other.toml"
    manifest.write_text(f"schema = 1\n\n[[model]]\n{other}")
    assert hashlib.sha256(model.read_bytes()).hexdigest() in other
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        engine, _ = check(url, repo, state)
        with engine.locked():
            engine.confirm("embedder", "test")
        add_release(repo, NewRelease(manifest, "other-embedder", "1.1.0", "stable", 0, PHOTOS))
        change(repo, "other-embedder", "1.1.0", lambda c: c.update(halted=True, halt_reason="not ours"))
        engine, outcomes = check(url, repo, state)
    assert [o.outcome for o in outcomes if o.kind == "embedder"] == ["up_to_date"]
    assert engine.slots.current("embedder") == "1.1.0"
    assert not engine.journal.state.refused


# -- 5. a pin never overrides the firmware limit ----------------------------------------------------
def test_a_pin_never_takes_a_release_that_needs_newer_firmware(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, min_firmware="9.0.0")
    state = tmp_path / "state"
    with serve(repo.path) as url:
        engine = Engine(ota_config(url, repo, state))
        with engine.locked():
            engine.pin("embedder", "1.1.0")
        engine, outcomes = check(url, repo, state)
    [outcome] = outcomes
    assert engine.slots.current("embedder") is None
    assert outcome.outcome == "rejected" and "needs firmware 9.0.0" in outcome.reason


# -- 7. one exit code and one journal entry per outcome ---------------------------------------------
def swapped_vectors(fields: dict[str, Any]) -> None:
    """The outputs of the photos in the other order: what a broken build would give."""
    fields["validation"]["expected"] = fields["validation"]["expected"][::-1]


def test_a_refused_release_exits_65_from_the_cli_and_status_shows_it(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, edit=swapped_vectors)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        code, out, err, _ = cli(env, "check", "--json")
    assert code == 65, err
    [outcome] = json.loads(out)
    assert outcome["outcome"] == "rejected" and "failed its validation vectors" in outcome["reason"]
    assert status(env)["last"]["outcome"] == "rejected"


def test_a_metadata_refusal_from_the_cli_is_in_the_journal_and_status(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    timestamp = repo.path / "metadata" / "timestamp.json"
    timestamp.write_text(re.sub(r'"expires": "\d{4}', '"expires": "2099', timestamp.read_text()))
    state = tmp_path / "state"
    before = time.time()
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        code, _, err, _ = cli(env, "check")
    assert code == 65 and "UnsignedMetadataError" in err, err
    shown = status(env)
    assert shown["last"]["outcome"] == "rejected" and "UnsignedMetadataError" in shown["last"]["reason"]
    assert shown["last_check"] >= before


@pytest.mark.heavy
def test_the_daemon_journals_a_refused_check_once_per_check_and_shows_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The engine records a failed check and the daemon's agent records it too: one entry, counted once
    per check, and the status topic shows it."""
    repo = new_repo(tmp_path)
    release(repo)
    timestamp = repo.path / "metadata" / "timestamp.json"
    timestamp.write_text(re.sub(r'"expires": "\d{4}', '"expires": "2099', timestamp.read_text()))
    with daemon_rig(broker.port, tmp_path, repo, extra={"APPLIANCE_OTA__INTERVAL_S": "2"}) as rig:
        daemon = rig.start()
        shown = rig.status(lambda s: (s["ota"].get("last") or {}).get("count", 1) >= 2, 60, "two checks")
        daemon.terminate()
        daemon.wait(10)
    assert shown["ota"]["last"]["outcome"] == "rejected"
    history = json.loads((rig.state / "ota" / "journal.json").read_text())["history"]
    [entry] = [o for o in history if "UnsignedMetadataError" in o["reason"]]
    checks = rig.log.read_text().count("OTA check failed")
    assert entry["count"] == checks, (entry, checks)


def test_a_tampered_index_is_refused_not_reported_unreachable(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    signed = repo.targets().signed.targets["index.json"].hashes["sha256"]
    index = repo.path / "targets" / f"{signed}.index.json"
    index.write_bytes(index.read_bytes() + b" " * 100)  # longer than signed
    with serve(repo.path) as url, pytest.raises(UpdateError, match=r"index\.json"):
        check(url, repo, tmp_path / "state")
    last = Engine(ota_config("http://127.0.0.1:1", repo, tmp_path / "state")).journal.last()
    assert last is not None and last.outcome == "rejected"


def test_endless_metadata_is_refused_not_reported_unreachable(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    timestamp = repo.path / "metadata" / "timestamp.json"
    timestamp.write_bytes(timestamp.read_bytes() + b" " * 100_000)  # far over ngclient's 16 KiB limit
    with serve(repo.path) as url, pytest.raises(UpdateError, match="metadata refused"):
        check(url, repo, tmp_path / "state")


@BOTH_SERVERS
def test_a_target_longer_than_signed_is_deleted_and_not_said_to_resume(tmp_path: Path, server: Serve) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    [model] = (repo.path / "targets").rglob("*embedder.tflite")
    model.write_bytes(model.read_bytes() + b"\0" * 1000)
    state = tmp_path / "state"
    with server(repo.path, None) as url:
        engine, [outcome] = check(url, repo, state)
    assert outcome.outcome == "rejected" and "will resume" not in outcome.reason
    assert "longer than" in outcome.reason
    assert not list((state / "ota" / "staging").glob("*.part"))
    assert engine.slots.current("embedder") is None


def test_the_outcome_table_is_the_same_in_code_docs_and_readme() -> None:
    docs = (ROOT / "docs" / "ota.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (yes|no) \|", docs, re.MULTILINE)
    assert {name: (int(code), journal == "yes") for name, code, journal in rows} == {
        name: (meaning.exit_code, meaning.journal) for name, meaning in OUTCOMES.items()
    }
    readme = " ".join((ROOT / "README.md").read_text().split())
    for name, meaning in OUTCOMES.items():
        if meaning.exit_code:
            assert re.search(rf"\b{meaning.exit_code}\b[^.;]*\b{name}\b", readme), name


# -- 8. a release that failed validation is not downloaded again ------------------------------------
def test_a_release_that_failed_validation_is_skipped_until_the_index_changes_it(
    tmp_path: Path, manifest: Any
) -> None:
    repo = new_repo(tmp_path)
    release(repo, edit=swapped_vectors)
    state = tmp_path / "state"
    seen: list[str] = []

    def progress(name: str, have: int, total: int) -> None:
        seen.append(name)

    with serve(repo.path) as url:
        _, [first] = check(url, repo, state, progress=progress)
        assert first.outcome == "rejected" and any(n.endswith("embedder.tflite") for n in seen)
        seen.clear()
        engine, [second] = check(url, repo, state, progress=progress)
        assert not [n for n in seen if not n.endswith("index.json")], "downloaded again"
        assert second.outcome == "up_to_date" and "failed validation before" in second.reason
        assert [o.outcome for o in engine.journal.state.history] == ["rejected"]
        summary = engine.journal.summary()
        assert f"{EMBEDDER}@1.1.0" in json.dumps(summary["invalid"])
        entry = manifest.get(EMBEDDER)
        good = _expected(manifest, entry, "embedder", [_small(read_image(p)) for p in PHOTOS])
        change(repo, EMBEDDER, "1.1.0", lambda c: c["validation"].update(expected=good))  # fixed
        engine, [third] = check(url, repo, state, progress=progress)
    assert third.outcome == "activated", third.reason
    assert not engine.journal.summary()["invalid"]


# -- 9. validation inputs are capped before they are unpacked ---------------------------------------
def npz_bomb(side: int) -> bytes:
    """A real npz (a zip of .npy files) holding one side x side RGB image of zeros, written in rows so
    that making it takes no memory; zeros compress about 1000:1."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (side, side, 3)}
    )
    rows = bytes(side * 3 * 50)
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("image0.npy", "w", force_zip64=True) as member,
    ):
        member.write(header.getvalue())
        for _ in range(side // 50):
            member.write(rows)
    return buffer.getvalue()


def many_entries(count: int) -> bytes:
    buffer = io.BytesIO()
    images: dict[str, Any] = {f"image{i}": np.zeros((2, 2, 3), np.uint8) for i in range(count)}
    np.savez_compressed(buffer, **images)
    return buffer.getvalue()


def lying_header() -> bytes:
    """One small member whose .npy header claims a 30 GB image."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (100_000, 100_000, 3)}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("image0.npy", header.getvalue() + bytes(1000))
    return buffer.getvalue()


def sign_inputs(repo: Repository, data: bytes) -> None:
    """Replace the release's validation inputs with `data`, signed like any target."""
    targets = repo.targets()
    [inputs] = [p for p in targets.signed.targets if p.endswith("validation.npz")]
    repo.add_data(targets.signed, inputs, data)
    repo.publish(targets)


@pytest.mark.heavy
def test_an_npz_bomb_is_refused_before_it_is_unpacked_and_memory_stays_low(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    bomb = npz_bomb(20_000)  # 1.2 GB unpacked
    assert len(bomb) < 5_000_000
    sign_inputs(repo, bomb)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        code, out, err, peak_mb = cli(ota_env(url, repo, state), "check", "--json")
    assert code == 65, err
    [outcome] = json.loads(out)
    assert outcome["outcome"] == "rejected" and "unpack" in outcome["reason"], outcome
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB (a good check: about 120 MB)"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(many_entries(5000), "entries"), (lying_header(), "header")],
    ids=["5000-entries", "header-claims-30-GB"],
)
def test_validation_inputs_with_too_many_entries_or_a_lying_header_are_refused(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    sign_inputs(repo, data)
    with serve(repo.path) as url:
        engine, [outcome] = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and reason in outcome.reason, outcome.reason
    assert engine.slots.current("embedder") is None

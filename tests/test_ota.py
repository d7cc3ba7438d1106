"""The updater against a real TUF repository (made by appliance-release) on a real HTTP server, with the
real models: good releases are taken, every kind of bad release is refused with the model untouched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from release.cli import main
from release.publish import NewRelease, _expected, _small, add_release, change, decode
from release.repository import Repository

from device.errors import RegistryUnavailableError, UpdateError
from device.images import read_image
from device.ota.cohort import bucket, in_cohort
from device.ota.engine import Engine
from device.ota.journal import Outcome

from .conftest import DATA, MODELS, ROOT
from .ota_helpers import PHOTOS, SERVERS, Faults, Serve, new_repo, ota_config, release, serve


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Serve:
    """The main paths run against http.server (HTTP/1.0) and nginx (HTTP/1.1, kept-alive connections)."""
    return SERVERS[request.param]


# Well-formed embedder outputs for releases refused before their vectors are compared.
UNUSED = [{"vector": "AAAA", "scale": 1.0, "zero_point": 0}] * 2


def check(url: str, repo: Repository, state: Path, **extra: str) -> tuple[Engine, Outcome]:
    engine = Engine(ota_config(url, repo, state, **extra))
    outcomes, _ = engine.check()
    return engine, outcomes[-1]


def assert_untouched(engine: Engine, state: Path) -> None:
    assert engine.slots.current("embedder") is None  # still the bundled model
    staging = state / "ota" / "staging"
    assert (
        not [p for p in staging.iterdir() if p.is_dir() or p.suffix == ".part"] if staging.exists() else True
    )


def test_a_signed_release_is_downloaded_validated_activated_and_taken_once(
    tmp_path: Path, server: Serve
) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    with server(repo.path, None) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
        assert (outcome.outcome, outcome.version) == ("activated", "1.1.0")
        assert engine.slots.current("embedder") == "1.1.0"
        assert engine.active("embedder")[1:] == ("efficientnet-lite0-int8", "1.1.0")
        assert "embedder" in engine.journal.state.health  # the daemon's health window decides
        _, again = check(url, repo, tmp_path / "state")
    assert again.outcome == "up_to_date"  # taken once


@pytest.mark.parametrize(
    ("model_id", "carried", "expected"),
    [
        ("efficientnet-lite0-dynamic", True, "dynamic-range"),
        ("efficientnet-lite0-int8", True, "int8"),
        # A release made before the field was carried: it follows from the input, as in a manifest.
        ("efficientnet-lite0-int8", False, "int8"),
    ],
)
def test_an_activated_release_says_what_its_file_holds(
    tmp_path: Path, model_id: str, carried: bool, expected: str
) -> None:
    """The models report and the fleet compare models by their quantisation: a dynamic-range model,
    whose input is float, must not come out of a slot as a float32 one."""
    repo = new_repo(tmp_path)

    def drop(fields: dict[str, Any]) -> None:
        del fields["spec"]["quantization"]

    release(repo, model_id=model_id, edit=None if carried else drop)
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert (outcome.outcome, outcome.version) == ("activated", "1.1.0"), outcome.reason
    manifest, active_id, _ = engine.active("embedder")
    assert (active_id, manifest.get(active_id).quantization) == (model_id, expected)


def test_a_newer_release_replaces_the_current_one_and_keeps_it_as_previous(
    tmp_path: Path, server: Serve
) -> None:
    repo = new_repo(tmp_path)
    release(repo, "1.1.0")
    state = tmp_path / "state"
    with server(repo.path, None) as url:
        engine, _ = check(url, repo, state)
        with engine.locked():
            engine.confirm("embedder", "test")
        release(repo, "1.2.0")
        engine, outcome = check(url, repo, state)
    assert (outcome.outcome, engine.slots.current("embedder"), engine.slots.previous("embedder")) == (
        "activated",
        "1.2.0",
        "1.1.0",
    )
    with engine.locked():
        engine.rollback("embedder", "operator")
    assert engine.slots.current("embedder") == "1.1.0"
    assert "efficientnet-lite0-int8@1.2.0" in engine.journal.state.refused


def test_a_tampered_file_is_refused(tmp_path: Path, server: Serve) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    [model] = (repo.path / "targets").rglob("*embedder.tflite")
    data = bytearray(model.read_bytes())
    data[5000] ^= 0xFF
    model.write_bytes(bytes(data))
    with server(repo.path, None) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and "does not match its signed hash" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_metadata_signed_by_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    trusted = new_repo(tmp_path / "a")
    forged = new_repo(tmp_path / "b")  # same layout, other keys
    release(forged)
    shutil.copyfile(trusted.path / "root.json", forged.path / "root.json")
    with serve(forged.path) as url, pytest.raises(UpdateError, match="UnsignedMetadataError"):
        check(url, trusted, tmp_path / "state")


def test_a_wrong_signature_is_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    timestamp = repo.path / "metadata" / "timestamp.json"
    text = timestamp.read_text()
    forged = re.sub(r'"expires": "\d{4}', '"expires": "2099', text)  # a longer life, not re-signed
    assert forged != text
    timestamp.write_text(forged)
    with serve(repo.path) as url, pytest.raises(UpdateError, match="UnsignedMetadataError"):
        check(url, repo, tmp_path / "state")


def test_expired_metadata_is_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    repo.publish(repo.targets(), expires={"timestamp": timedelta(seconds=-60)})
    with serve(repo.path) as url, pytest.raises(UpdateError, match="ExpiredMetadataError"):
        check(url, repo, tmp_path / "state")


def test_replayed_older_metadata_is_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    old = (repo.path / "metadata" / "timestamp.json").read_bytes()
    release(repo)  # a newer timestamp
    with serve(repo.path) as url:
        check(url, repo, tmp_path / "state")
        (repo.path / "metadata" / "timestamp.json").write_bytes(old)  # the attacker replays the old one
        with pytest.raises(UpdateError, match="BadVersionNumberError"):
            check(url, repo, tmp_path / "state")


def test_a_target_path_that_traverses_is_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, edit=lambda fields: fields.update(labels="../../etc/passwd"))
    with serve(repo.path) as url:
        engine = Engine(ota_config(url, repo, tmp_path / "state"))
        outcomes, _ = engine.check()
    [rejected] = [o for o in outcomes if o.outcome == "rejected"]
    assert "'../../etc/passwd' is not a plain relative path" in rejected.reason
    assert_untouched(engine, tmp_path / "state")
    assert not (tmp_path / "etc").exists()


def test_an_oversized_target_is_refused_before_downloading(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    faults = Faults()
    with serve(repo.path, faults) as url:
        engine, outcome = check(url, repo, tmp_path / "state", APPLIANCE_OTA__MAX_TARGET_BYTES="1000000")
    assert not faults.ranges
    assert outcome.outcome == "rejected" and "over ota.max_target_bytes" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_a_model_whose_tensors_do_not_fit_its_kind_is_refused(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    # The SSD detector published as an embedder: it loads, but its outputs are boxes, not a vector.
    release(repo, model_id="ssdlite-person-int8", kind="embedder", adapter="embedder", expected=UNUSED)
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and "does not fit the embedder adapter" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_a_model_that_fails_its_validation_vectors_is_refused(tmp_path: Path, manifest: Any) -> None:

    entry = manifest.get("efficientnet-lite0-int8")
    swapped = _expected(manifest, entry, "embedder", [_small(read_image(p)) for p in reversed(PHOTOS)])
    repo = new_repo(tmp_path)
    release(repo, expected=swapped)  # the outputs of other inputs: what a broken build would give
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and "failed its validation vectors" in outcome.reason
    assert "cosine" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_garbage_bytes_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(bytes(range(256)) * 400)
    repo = new_repo(tmp_path)
    release(repo, model_file=garbage)
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and "cannot be loaded" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_an_edge_tpu_model_without_a_cpu_twin_is_refused_on_a_device_without_a_tpu(
    tmp_path: Path, manifest: Any
) -> None:
    repo = new_repo(tmp_path)
    release(repo, model_file=DATA / "edgetpu" / "mobilenet_v2_1.0_224_quant_edgetpu.tflite", expected=UNUSED)
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "rejected" and "compiled for the Edge TPU" in outcome.reason
    assert_untouched(engine, tmp_path / "state")


def test_an_unreachable_registry_keeps_the_current_model(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    with serve(repo.path) as url:
        pass  # the server is gone again: its port refuses connections
    engine = Engine(ota_config(url, repo, tmp_path / "state"))
    with pytest.raises(RegistryUnavailableError, match="unreachable"):
        engine.check()
    assert engine.active("embedder")[2] == "1.0.0"


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path, server: Serve) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    faults = Faults(break_after=2_000_000)
    state = tmp_path / "state"
    with server(repo.path, faults) as url:
        _, outcome = check(url, repo, state)
        assert outcome.outcome == "unavailable" and "will resume" in outcome.reason
        [part] = (state / "ota" / "staging").glob("*.part")
        kept = part.stat().st_size
        assert 1_900_000 < kept <= 2_000_000  # what arrived, less an incomplete last chunk
        _engine, outcome = check(url, repo, state)
    assert outcome.outcome == "activated"
    assert faults.ranges == [f"bytes={kept}-"]
    assert not list((state / "ota" / "staging").glob("*.part"))


def test_a_full_disk_during_download_aborts_and_cleans_up(tmp_path: Path, small_disk: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)  # 5.4 MB of model on a 1 MiB disk
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, small_disk)
    assert outcome.outcome == "rejected" and "disk is full" in outcome.reason
    assert_untouched(engine, small_disk)


def test_a_halted_release_is_not_taken_and_devices_on_it_roll_back(tmp_path: Path) -> None:

    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        engine, _ = check(url, repo, state)
        with engine.locked():
            engine.confirm("embedder", "test")
        change(
            repo, "efficientnet-lite0-int8", "1.1.0", lambda c: c.update(halted=True, halt_reason="bad crops")
        )
        engine, outcome = check(url, repo, state)
    assert outcome.outcome == "rolled_back" and "bad crops" in outcome.reason
    assert engine.slots.current("embedder") is None


def test_cohorts_are_stable_and_grow_with_the_percent() -> None:
    devices = [f"dev-{i}" for i in range(2000)]
    at10 = {d for d in devices if in_cohort(d, "m@1.1.0", 10)}
    at50 = {d for d in devices if in_cohort(d, "m@1.1.0", 50)}
    assert at10 < at50  # raising the percent keeps everyone already in
    assert 150 < len(at10) < 250 and 900 < len(at50) < 1100
    assert bucket("dev-1", "m@1.1.0") == bucket("dev-1", "m@1.1.0")
    other = {d for d in devices if in_cohort(d, "m@1.2.0", 10)}
    assert other != at10  # another release, another first 10%


def test_a_device_outside_the_cohort_keeps_its_model(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, percent=0)
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "up_to_date" and engine.slots.current("embedder") is None


def test_the_release_tool_lists_promotes_and_halts(tmp_path: Path) -> None:

    repo = new_repo(tmp_path)
    release(repo, channel="beta", percent=10)
    args = ["--repo", str(repo.path), "--keys", str(tmp_path / "keys")]
    assert (
        main(
            [
                *args,
                "promote",
                "--model",
                "efficientnet-lite0-int8",
                "--version",
                "1.1.0",
                "--channel",
                "stable",
                "--percent",
                "100",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *args,
                "rollout",
                "--model",
                "efficientnet-lite0-int8",
                "--version",
                "1.1.0",
                "--channel",
                "beta",
                "--percent",
                "101",
            ]
        )
        == 78
    )
    assert (
        main([*args, "halt", "--model", "efficientnet-lite0-int8", "--version", "1.1.0", "--reason", "x"])
        == 0
    )
    [target] = repo.releases().values()
    fields = decode(target.unrecognized_fields["custom"]["appliance"])
    assert fields["channels"] == {"beta": 10, "stable": 100} and fields["halted"] is True


def test_a_rotated_targets_key_is_followed_by_devices(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    with serve(repo.path) as url:
        check(url, repo, tmp_path / "state")
        assert repo.rotate("targets") == 2
        release(repo)
        _, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "activated"  # root v2 names the new key; the device trusted it via v1
    assert (tmp_path / "state" / "ota" / "metadata" / "root_history" / "2.root.json").exists()
    assert list((tmp_path / "keys").glob("targets.retired-v1.pem"))


def test_the_release_tool_publishes_the_manifest_version_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = new_repo(tmp_path)
    args = ["--repo", str(repo.path), "--keys", str(tmp_path / "keys")]
    demo = ROOT / "deploy" / "demo-release" / "manifest.toml"
    assert (
        main(
            [
                *args,
                "add",
                "--manifest",
                str(demo),
                "--model",
                "efficientnet-lite0-int8",
                "--photo",
                str(PHOTOS[0]),
                "--photo",
                str(PHOTOS[1]),  # an embedder needs two photos it tells apart (tests/test_release_tool.py)
            ]
        )
        == 0
    )
    assert main([*args, "list"]) == 0
    listing = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [(r["version"], r["channels"]) for r in listing] == [("1.1.0", {"beta": 10})]


def test_start_up_judges_health_windows_only_when_the_daemon_runs_them(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        check(url, repo, state)  # as `appliance ota check` does: the window is not running yet
        config = ota_config(url, repo, state)
    assert Engine(config).startup(run_windows=False) == []  # OTA off: the window waits
    assert not Engine(config).journal.state.health["embedder"].running
    assert Engine(config).startup() == []  # a daemon with OTA on starts the window ...
    [outcome] = Engine(config).startup()  # ... and one that finds it still running died inside it
    assert outcome.outcome == "rolled_back" and "during the health window" in outcome.reason
    assert Engine(config).slots.current("embedder") is None


def test_a_release_for_newer_firmware_is_not_taken(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, min_firmware="9.0.0")
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert outcome.outcome == "up_to_date" and engine.slots.current("embedder") is None


def test_an_edge_tpu_model_with_a_cpu_twin_runs_the_twin_on_a_device_without_a_tpu(tmp_path: Path) -> None:
    """The release carries a CPU build beside the Edge TPU one; a device with no TPU downloads both and
    runs the CPU build. (The embedder stands in for the CPU build of the compiled MobileNet: only the
    mechanism is under test, and the validation vectors come from the twin, as the release tool makes
    them on a build machine without a TPU.)"""
    compiled = DATA / "edgetpu" / "mobilenet_v2_1.0_224_quant_edgetpu.tflite"
    cpu = MODELS / "efficientnet_lite0_int8_embedder.tflite"
    common = (
        'kind = "embedder"\nadapter = "embedder"\nlicence = "Apache-2.0"\n'
        'input = { shape = [1, 224, 224, 3], dtype = "uint8" }\n'
        'source = { package = "test", version = "1" }\n'
    )
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        "schema = 1\n\n[[model]]\n"
        f'id = "mobilenet-tpu"\nversion = "2.0.0"\nfile = "{compiled}"\n'
        f'sha256 = "{hashlib.sha256(compiled.read_bytes()).hexdigest()}"\n'
        f'cpu_twin = "mobilenet-cpu"\n{common}'
        "\n[[model]]\n"
        f'id = "mobilenet-cpu"\nversion = "2.0.0"\nfile = "{cpu}"\n'
        f'sha256 = "{hashlib.sha256(cpu.read_bytes()).hexdigest()}"\n{common}'
    )
    repo = new_repo(tmp_path)
    add_release(repo, NewRelease(manifest, "mobilenet-tpu", "", "stable", 100, PHOTOS))
    with serve(repo.path) as url:
        engine, outcome = check(url, repo, tmp_path / "state")
    assert (outcome.outcome, outcome.version) == ("activated", "2.0.0"), outcome.reason
    slot = tmp_path / "state" / "ota" / "slots" / "embedder" / "2.0.0"
    assert (slot / compiled.name).exists() and (slot / cpu.name).exists()  # both came down
    manifest_, model_id, _ = engine.active("embedder")
    loaded = engine.factory.load(manifest_, model_id)
    assert loaded.entry.id == "mobilenet-tpu-cpu-twin" and loaded.requested_id == "mobilenet-tpu"

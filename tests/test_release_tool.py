"""`appliance-release` refuses what devices could not check, and every malformed value, with one line
and an exit code, before it writes anything to the repository (issue 12, points 6 and 10)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from release.cli import main
from release.repository import Repository

from .conftest import DATA, MODELS
from .ota_helpers import EMBEDDER, new_repo, release

MANIFEST = MODELS / "manifest.toml"
PERSON = "ssdlite-person-int8"


def files(repo: Repository) -> dict[str, bytes]:
    """Every file of the repository and its bytes: what `writes nothing` compares."""
    return {str(p.relative_to(repo.path)): p.read_bytes() for p in repo.path.rglob("*") if p.is_file()}


def cli(repo: Repository, *args: str) -> int:
    return main(["--repo", str(repo.path), "--keys", str(repo.key_dir), *args])


def add(repo: Repository, model: str, photos: list[Path], *extra: str) -> int:
    return cli(
        repo,
        "add",
        "--manifest",
        str(MANIFEST),
        "--model",
        model,
        *[arg for p in photos for arg in ("--photo", str(p))],
        *extra,
    )


def one_line(err: str) -> str:
    """The refusal is one line, not a traceback or a pydantic error list."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in lines[0] and "Traceback" not in lines[0], err
    return lines[0]


def listed(repo: Repository) -> list[tuple[str, str]]:
    releases = []
    for target in repo.releases().values():
        fields = json.loads(target.unrecognized_fields["custom"]["appliance"])
        releases.append((fields["model_id"], fields["version"]))
    return releases


@pytest.fixture
def blank(tmp_path: Path) -> Path:
    """A photo of nothing: no detector finds anything on it."""
    path = tmp_path / "blank.png"
    assert cv2.imwrite(str(path), np.full((240, 320, 3), 40, np.uint8))
    return path


# -- point 6: validation photos must be able to catch a broken model ------------------------------
def test_a_detector_whose_photos_show_nothing_is_refused_and_nothing_is_written(
    tmp_path: Path, blank: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = new_repo(tmp_path)
    before = files(repo)
    # A blank image, and a photo with no person in it for the person detector: expected [] on both, so
    # a detector that never fires would pass them.
    assert add(repo, PERSON, [blank, DATA / "coffee.png"], "--version", "1.1.0") == 65
    line = one_line(capsys.readouterr().err)
    assert "finds nothing" in line and "--photo" in line and "blank.png" in line
    assert files(repo) == before


def test_a_detector_with_a_photo_it_detects_something_on_is_published(tmp_path: Path, blank: Path) -> None:
    repo = new_repo(tmp_path)
    assert add(repo, PERSON, [blank, DATA / "astronaut.png"], "--version", "1.1.0") == 0
    assert listed(repo) == [(PERSON, "1.1.0")]
    [target] = repo.releases().values()
    expected = json.loads(target.unrecognized_fields["custom"]["appliance"])["validation"]["expected"]
    assert [len(e["detections"]) for e in expected] == [0, 1]  # the person, which a device must find


def test_an_embedder_with_one_photo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = new_repo(tmp_path)
    before = files(repo)
    assert add(repo, EMBEDDER, [DATA / "coffee.png"], "--version", "1.1.0") == 65
    line = one_line(capsys.readouterr().err)
    assert "at least 2" in line and "--photo" in line
    assert files(repo) == before


def test_an_embedder_whose_photos_look_alike_to_it_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A photo and its mirror image embed at cosine ~0.95: one output vector could be within 0.98 of
    both, so the pair cannot show that the device's model responds to its input."""
    repo = new_repo(tmp_path)
    before = files(repo)
    photos = [DATA / "astronaut.png", DATA / "astronaut_flipped.png"]
    assert add(repo, EMBEDDER, photos, "--version", "1.1.0") == 65
    line = one_line(capsys.readouterr().err)
    assert "alike" in line and "astronaut_flipped.png" in line
    assert files(repo) == before
    assert add(repo, EMBEDDER, [*photos, DATA / "coffee.png"], "--version", "1.1.0") == 0
    assert listed(repo) == [(EMBEDDER, "1.1.0")]


# -- point 10: malformed values are refused with one line naming them, exit 64 ---------------------
BAD_ADD = [
    ("--version", "../../x"),
    ("--version", "1.0"),
    ("--version", "1.0.0\n"),
    ("--version", "1.0.0/../../x"),
    ("--min-firmware", "../x"),
    ("--channel", "../../x"),
    ("--channel", "Stable"),
    ("--channel", "a/b"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_ADD)
def test_add_refuses_a_malformed_value_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    repo = new_repo(tmp_path)
    before = files(repo)
    version = [] if flag == "--version" else ["--version", "1.1.0"]
    photos = [DATA / "coffee.png", DATA / "chelsea.png"]
    assert add(repo, EMBEDDER, photos, *version, flag, value) == 64
    line = one_line(capsys.readouterr().err)
    assert flag in line and repr(value) in line
    assert files(repo) == before


@pytest.mark.parametrize("model", ["../../x", "Efficientnet", "a/b", ".hidden"])
def test_add_refuses_a_malformed_model_id_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    repo = new_repo(tmp_path)
    before = files(repo)
    assert add(repo, model, [DATA / "coffee.png", DATA / "chelsea.png"]) == 64
    line = one_line(capsys.readouterr().err)
    assert "--model" in line and repr(model) in line
    assert files(repo) == before


def test_a_manifest_version_that_is_not_a_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --version the manifest entry's version names the release's folder: it is checked too."""
    model = MODELS / "efficientnet_lite0_int8_embedder.tflite"
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        'schema = 1\n\n[[model]]\nid = "embedder"\nversion = "../../1"\nkind = "embedder"\n'
        f'adapter = "embedder"\nfile = "{model}"\nsha256 = "{sha256}"\n'
        'licence = "MIT"\ninput = { shape = [1, 224, 224, 3], dtype = "uint8" }\n'
        'source = { package = "test", version = "1" }\n'
    )
    repo = new_repo(tmp_path)
    before = files(repo)
    photos = ["--photo", str(DATA / "coffee.png"), "--photo", str(DATA / "chelsea.png")]
    assert cli(repo, "add", "--manifest", str(manifest), "--model", "embedder", *photos) == 64
    line = one_line(capsys.readouterr().err)
    assert "'../../1'" in line and "--version" in line
    assert files(repo) == before


def test_add_refuses_a_percent_out_of_range_like_rollout_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = new_repo(tmp_path)
    photos = [DATA / "coffee.png", DATA / "chelsea.png"]
    assert add(repo, EMBEDDER, photos, "--version", "1.1.0", "--percent", "101") == 78
    assert "--percent must be 0..100, not 101" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "args",
    [
        ["promote", "--model", EMBEDDER, "--version", "../x", "--channel", "stable", "--percent", "5"],
        ["rollout", "--model", "../x", "--version", "1.1.0", "--channel", "beta", "--percent", "5"],
        ["promote", "--model", EMBEDDER, "--version", "1.1.0", "--channel", "../x", "--percent", "5"],
        ["halt", "--model", EMBEDDER, "--version", "1.1.0/..", "--reason", "bad"],
    ],
)
def test_promote_rollout_and_halt_refuse_malformed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    repo = new_repo(tmp_path)
    release(repo, channel="beta", percent=10)
    before = files(repo)
    assert cli(repo, *args) == 64
    line = one_line(capsys.readouterr().err)
    assert any(f"{flag} {value!r}" in line for flag, value in zip(args[1::2], args[2::2], strict=False))
    assert files(repo) == before

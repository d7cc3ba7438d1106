"""Shared fixtures: the real models, the real photos, a stub Edge TPU delegate built with gcc, and real
mosquitto brokers (plain, and the production config over TLS)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.config import DetectorConfig, EmbedderConfig, RuntimeConfig
from device.images import read_image
from device.vision.embedder import Embedder
from device.vision.manifest import Manifest
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory, LoadedModel
from pricing.build import build_demo

from .broker import Mosquitto
from .daemons import reap
from .mqtt_helpers import Collector
from .tls_broker import TlsBroker, build_share_guard, site_pki

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MODELS = ROOT / "models"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heavy tests first, each group still in pytest-randomly's order (its wrapper shuffles before this
    runs). With xdist handing out two tests at a time (`--maxschedchunk 2` in the Makefile), the longest
    tests start on every worker at once instead of one of them starting last and alone (the classic
    longest-first rule: a 45 s test begun last adds its whole length to the suite)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture(autouse=True)
def reap_daemons() -> Iterator[None]:
    yield
    reap()


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return Manifest.load(MODELS / "manifest.toml")


@pytest.fixture(scope="session")
def cpu_factory() -> InterpreterFactory:
    return InterpreterFactory(RuntimeConfig(device="cpu", num_threads=2))


@pytest.fixture(scope="session")
def load_model(manifest: Manifest, cpu_factory: InterpreterFactory) -> Callable[[str], LoadedModel]:
    cache: dict[str, LoadedModel] = {}

    def load(model_id: str) -> LoadedModel:
        if model_id not in cache:
            cache[model_id] = cpu_factory.load(manifest, model_id)
        return cache[model_id]

    return load


@pytest.fixture(scope="session")
def photo() -> Callable[[str], Image]:
    def read(name: str) -> Image:
        return read_image(DATA / f"{name}.png")

    return read


@pytest.fixture(scope="session")
def embedder(load_model: Callable[[str], LoadedModel]) -> Embedder:
    return Embedder(load_model("efficientnet-lite0-int8"), EmbedderConfig())


@pytest.fixture()
def detector_config() -> DetectorConfig:
    return DetectorConfig(score_threshold=0.3)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """What `build(folder)` returns, built once per test run however many xdist workers ask for it.
    A session fixture runs once per worker: six workers built the same demo catalog, site PKI and
    broker plugin six times (about 2 CPU-s each time). The first worker builds it under a lock in the
    run's own temporary folder, the others wait for it and share it, so a fixture built this way is
    never modified by a test."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(factory.mktemp(name))
    run = factory.getbasetemp().parent  # pytest-N: this run's, shared by its workers (popen-gwN)
    built = run / f"{name}.built"
    with (run / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():  # a worker whose build failed left no mark: the next one tries afresh
            built.write_text(str(build(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=run)))))
        return Path(built.read_text())


@pytest.fixture(scope="session")
def stub_delegate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libstub_delegate.so: exports the libedgetpu delegate entry points and logs the options it gets."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "gcc is required to build the stub delegate (make test installs it with apt-get)"

    def build(folder: Path) -> Path:
        out = folder / "libstub_delegate.so"
        source = ROOT / "tests" / "stub_delegate" / "stub_delegate.c"
        subprocess.run(
            [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out), str(source)], check=True
        )
        return out

    return built_once(tmp_path_factory, "stub", build)


@pytest.fixture()
def collector(broker: Mosquitto) -> Iterator[Collector]:
    """Every message on appliance/#, from a subscription acknowledged before the test runs."""
    subscriber = Collector(broker.port)
    yield subscriber
    subscriber.close()


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog (synthetic prices) for the bundled embedder, built once per run; never modified."""

    def build(folder: Path) -> Path:
        path = folder / "demo.sqlite"
        build_demo(
            ROOT / "demo", path, MODELS / "manifest.toml", "efficientnet-lite0-int8", "centernet-coco-float"
        )
        return path

    return built_once(tmp_path_factory, "catalog", build)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, stopped after the test."""
    instance = Mosquitto(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site's certificates from deploy/pki.sh (names: tests/tls_broker.py site_pki); never modified."""
    return built_once(tmp_path_factory, "pki", site_pki)


@pytest.fixture(scope="session")
def share_guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "plugin", lambda folder: build_share_guard(folder / "share_guard.so"))


@pytest.fixture()
def tls_broker(tmp_path: Path, certs: Path, share_guard: Path) -> Iterator[TlsBroker]:
    """mosquitto with deploy/mosquitto/appliance.conf as it is, over TLS on a free loopback port."""
    instance = TlsBroker(tmp_path, certs, share_guard)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def embedder_dir() -> Path:
    return MODELS


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), for ENOSPC. Mounting needs root, which CI and this machine have."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)

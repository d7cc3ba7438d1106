"""The only wiring place: builds every part from the Config, owns the threads, starts and stops them.

Threads: `camera` (FrameGrabber: reads the source, keeps the latest frame), `mqtt` (Link: network
loop and reconnects), `http` (the live view, device/live/, with its `live-encoder` while someone
watches), `sensors` (device/thermal/sampler.py), `control` (commands and quotes), `stats` (snapshot,
outbox expiry, publishing), `ota`, and the caller's thread, which runs the pipeline and nothing else slow.
SIGTERM sets the stop event; everything is down within 2 s when each part stops as it should (tests/
test_daemon.py), and the parts' own stop timeouts bound it at 4.4 s (OTA 2, link 1.2, camera and live view
0.5 each, sensors 0.2), under systemd's TimeoutStopSec.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device import __version__
from device.backoff import Backoff
from device.camera.factory import make_source
from device.camera.grabber import FrameGrabber
from device.clock import Clock, SystemClock
from device.config import Config
from device.control import Control, OtaCommand
from device.errors import ModelError
from device.failover import TpuFailover
from device.fleetbench.runner import BenchAgent, catalogue
from device.link.drain import Drainer
from device.link.homeassistant import Discovery, hardware_model
from device.link.mqtt import Incoming, Link
from device.link.outbox import Outbox
from device.link.topics import Topics
from device.notify import Notifier
from device.ota.agent import Agent
from device.ota.engine import Engine
from device.pace import PaceController
from device.pipeline import Pipeline
from device.supervise import supervised
from device.telemetry import Telemetry, models_status
from device.thermal.governor import Governor
from device.thermal.sampler import SampledSensors
from device.thermal.sensors import SystemSensors
from device.vision.embedder import Embedder
from device.vision.models import make_detector
from device.vision.runtime import InterpreterFactory, LoadedModel
from device.vision.tracker import Tracker
from device.wire import ObjectMessage

if TYPE_CHECKING:
    from device.live.server import LiveServer

log = logging.getLogger(__name__)

MAX_FAILING_FRAMES = 50  # in a row: the pipeline is broken, let systemd restart the daemon


@dataclass
class Observers:
    """Hooks for `appliance run --live` and tests, called on the app's own threads (objects on the
    frame thread, quotes on the control thread, stats on the stats thread), never from paho's."""

    on_object: Callable[[ObjectMessage], None] | None = None
    on_quote: Callable[[dict[str, Any]], None] | None = None
    on_stats: Callable[[dict[str, Any]], None] | None = None


class App:
    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        observers: Observers | None = None,
        camera_class: Any = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.observers = observers or Observers()
        self.topics = Topics(config.mqtt.topic_prefix, config.device_id)
        # Models come from the OTA slots when an update was activated, else from the bundled manifest.
        self.ota_engine = Engine(config, InterpreterFactory(config.runtime))
        self.ota_engine.startup(run_windows=config.ota.enabled)
        detector = make_detector(self._load_model("detector"), config.detector)
        embedder = Embedder(self._load_model("embedder"), config.embedder)
        gov = config.governor
        # Read on their own thread: the governor, asked for the pace on the frame thread, never waits.
        self.sensors = SampledSensors(SystemSensors(gov.sysfs_root), gov.interval_s)
        self.governor = Governor(gov, self.sensors, self.clock) if gov.enabled else None
        self.pace = PaceController(config.pipeline, self.clock, self.governor)
        self.outbox = Outbox(config.state_dir / "outbox.sqlite", config.outbox, self.clock)
        self.pipeline = Pipeline(
            detector,
            embedder,
            Tracker(config.tracker),
            self.pace,
            self._store,
            config.pipeline,
            self.clock,
            sink_many=self._store_many,
        )
        lores = (detector.input_width, detector.input_height)
        source = make_source(config.camera, lores_size=lores, clock=self.clock, camera_class=camera_class)
        self.grabber = FrameGrabber(
            source, Backoff(1.0, config.camera.reopen_max_s), on_state=self._camera_state
        )
        discovery = Discovery(
            config.homeassistant, self.topics, config.mqtt.stats_interval_s, hardware_model(gov.sysfs_root)
        )
        self.link = Link(
            config.mqtt,
            self.topics,
            self._status,
            Drainer(self.outbox, config.outbox, self.clock),
            announce=discovery.messages,
        )
        self._status_changed = threading.Event()
        self.agent = (
            Agent(self.ota_engine, self.pipeline, config, self.clock, self._status_changed.set)
            if config.ota.enabled
            else None
        )
        self.failover = TpuFailover(config, self.ota_engine, self.pipeline, self._status_changed.set)
        self._paused_seen = threading.Event()  # the frame thread found the pipeline paused
        sensors = self.sensors.read if self.governor is not None else self.sensors.sensors.read
        self.bench = BenchAgent(
            config,
            catalogue=lambda: catalogue(self.ota_engine, config.models.manifest),
            pace=self.pace,
            idle=self._paused_seen,
            readings=sensors,
            publish=self.link.publish_bench,
        )
        self.control = Control(
            self.topics,
            self.pace,
            self._on_quote,
            self._ota_check,
            self._ota_command,
            on_bench=self.bench.submit,
        )
        self._stored_at: dict[int, float] = {}  # seq -> when stored, for the quote round trip
        self._stored_lock = threading.Lock()
        self._stopping = threading.Event()
        self.notifier = Notifier()
        self._frames_at = self._pinged_at = -1e18
        self._failing = 0  # consecutive frames that raised
        self._control_thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        stats = supervised("stats", self._stats_loop, self._stopping, lambda _why: None)
        self._stats_thread = threading.Thread(target=stats, name="stats", daemon=True)
        self.telemetry = Telemetry(
            config.device_id, self.clock, self.pipeline, self.grabber, self.link, self.governor, self._ota
        )
        self.live = self._live_view() if config.http.enabled else None

    def _live_view(self) -> LiveServer:
        # Imported here: its web stack (aiohttp) costs a daemon that runs without the live view about
        # 0.1 CPU-s of start-up on this machine, for nothing.
        from device.live.server import Actions, LiveServer  # noqa: PLC0415 - see above

        # The page's operator actions go through the same Control as cmd/<name> from the broker.
        actions = Actions(self._status, self._operator_command, lambda: self.pace.current().to_dict())
        return LiveServer(self.config.http, actions)

    def _load_model(self, kind: str) -> LoadedModel:
        """An activated release that no longer loads is rolled back: the device never runs a broken
        model, and never stops for want of one while an older one works."""
        engine = self.ota_engine
        try:
            return engine.load(kind)
        except ModelError as exc:
            if engine.slots.current(kind) is None:
                raise
            with engine.locked():
                engine.rollback(kind, f"it failed to load at start-up: {exc}")
            return self._load_model(kind)

    def _ota_check(self, why: str) -> None:
        if self.agent is None:
            log.warning("OTA check (%s) ignored: [ota] is not enabled in the config", why)
        else:
            self.agent.trigger(why)

    def _ota_command(self, action: str, command: OtaCommand) -> None:
        if self.agent is None:
            log.warning("cmd/ota-%s ignored: [ota] is not enabled in the config", action)
        else:
            self.agent.command(action, command.kind, command.version)

    def _operator_command(self, name: str, payload: bytes) -> None:
        self.control.handle(Incoming(self.topics.command(name), payload))

    def _status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "models": models_status(self.pipeline),
            "camera": self.grabber.stats.state,
            "ota": self._ota(),
        }

    def _ota(self) -> dict[str, Any]:
        return self.agent.status() if self.agent else self.ota_engine.journal.summary()

    def _camera_state(self, state: str) -> None:
        self._status_changed.set()  # republished from the app thread, not the camera's

    def _store(self, message: ObjectMessage) -> ObjectMessage | None:
        """The pipeline's sink: into the outbox (which assigns seq); the link drains it from there."""
        stored = self.outbox.add(message)
        self._stored(stored)
        return stored

    def _store_many(self, messages: list[ObjectMessage]) -> list[ObjectMessage | None]:
        """A frame's objects in one outbox transaction (all stored or none)."""
        stored = self.outbox.add_many(messages)
        for one in stored:
            self._stored(one)
        return stored

    def _stored(self, stored: ObjectMessage | None) -> None:
        if stored is not None:
            with self._stored_lock:
                self._stored_at[stored.seq] = self.clock.monotonic()
                while len(self._stored_at) > 1000:  # keep only recent messages' times
                    self._stored_at.pop(next(iter(self._stored_at)))
            if self.observers.on_object is not None:
                self.observers.on_object(stored)

    def _on_quote(self, quote: dict[str, Any]) -> None:
        """Adds `round_trip_ms`: from storing the object message to its quote arriving here."""
        seq = quote.get("seq")
        with self._stored_lock:
            stored = self._stored_at.pop(seq, None) if isinstance(seq, int) else None
        if stored is not None:
            quote = {**quote, "round_trip_ms": round((self.clock.monotonic() - stored) * 1e3, 2)}
        if self.observers.on_quote is not None:
            self.observers.on_quote(quote)
        if self.live is not None:
            self.live.quote(quote)

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        """Run until `stop` is set, the duration passes, or a finite source ends."""
        started = self.clock.monotonic()
        self.telemetry.started = started
        if self.governor is not None:
            self.sensors.start()
        self.link.start()
        if self.live is not None:
            self.live.start()
        self.grabber.start()
        self._control_thread.start()
        self._stats_thread.start()
        if self.agent is not None:
            self.agent.start()
        self.notifier.ready(f"running: device {self.config.device_id}, source {self.grabber.source.name}")
        log.info(
            "appliance %s running: device %s, source %s",
            __version__,
            self.config.device_id,
            self.grabber.source.name,
        )
        try:
            while not stop.is_set():
                now = self.clock.monotonic()
                if duration is not None and now - started >= duration:
                    break
                self._service()
                if self._step(stop):
                    self._frames_at = self.clock.monotonic()
                elif self.grabber.ended:
                    break
                self._heartbeat()
        finally:
            self.shutdown()

    def _stats_loop(self) -> None:
        """Expiry (an SQLite DELETE) and the stats snapshot, every stats interval, off the frame thread."""
        while not self._stopping.wait(self.config.mqtt.stats_interval_s):
            self.outbox.expire()
            snapshot = self.telemetry.snapshot()
            if self.live is not None:
                snapshot["live"] = self.live.figures()
                self.live.stats(snapshot)
            snapshot["bench"] = self.bench.stats()
            self.link.publish_stats(snapshot)
            if self.observers.on_stats is not None:
                self.observers.on_stats(snapshot)
            self.notifier.status(
                f"{snapshot['fps']['processed']:.1f} fps, outbox {snapshot['outbox']['depth']}, "
                f"camera {snapshot['camera']['state']}, pace: {snapshot['pace']['reason']}"
            )

    def _control_loop(self) -> None:
        """Commands and quotes are handled as they arrive, on their own thread: on the frame loop they
        would wait up to a frame (66 ms at 15 fps) before anyone saw them."""
        while not self._stopping.is_set():
            try:
                message = self.link.incoming.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.control.handle(message)
            except Exception:  # a bad message or observer must not end command handling
                log.exception("error while handling %s", message.topic)

    def _heartbeat(self) -> None:
        """WATCHDOG=1 only while frames flow (or the pipeline is paused on purpose): a camera that died
        or a stuck pipeline stops the pings, and systemd restarts the daemon."""
        interval = self.notifier.watchdog_interval_s
        now = self.clock.monotonic()
        if interval is None or now - self._pinged_at < interval:
            return
        if self.pace.current().paused or now - self._frames_at <= 2 * interval:
            self.notifier.watchdog()
            self._pinged_at = now

    def _service(self) -> None:
        if self.governor is not None:
            self.failover.poll(self.governor.readings)
        if self._status_changed.is_set():
            self._status_changed.clear()
            self.pipeline.apply_swap()  # an OTA swap or rollback: report the models that run now
            state = self.grabber.stats
            self.notifier.status(f"camera {state.state}: {state.last_error or 'ok'}")
            if self.link.stats.connected:  # otherwise it goes out with the status on connecting
                self.link.publish_status()

    def _step(self, stop: threading.Event) -> bool:
        """Process one frame, honouring pause and max_fps. False when no frame came."""
        pace = self.pace.current()
        if pace.paused:
            self._paused_seen.set()  # no frame is in flight: a benchmark may start (cmd/bench)
            stop.wait(0.1)
            return False
        frame = self.grabber.take(timeout=0.1)
        if frame is None:
            return False
        began = self.clock.monotonic()
        try:
            tracks = self.pipeline.process(frame, pace)
            if self.live is not None:
                self.live.slot.offer(frame, tracks)  # a reference only: the encoder runs elsewhere
            self._failing = 0
        except (ModelError, RuntimeError, ValueError) as exc:
            # Counted (the OTA health window rolls a new model back on these); only a run of them ends
            # the daemon, and systemd restarts it.
            self.pipeline.counters.errors += 1
            self._failing += 1
            if self._failing >= MAX_FAILING_FRAMES:
                raise
            if self._failing == 1:
                log.error("frame failed in the pipeline: %s", exc)
        if pace.max_fps > 0:
            stop.wait(max(0.0, 1.0 / pace.max_fps - (self.clock.monotonic() - began)))
        return True

    def shutdown(self) -> None:
        self.notifier.stopping()
        self._stopping.set()
        self.bench.stop(timeout=0.3)
        if self.agent is not None:
            self.agent.stop()
        self.grabber.stop(timeout=0.5)
        self.sensors.stop(timeout=0.2)
        if self.live is not None:
            self.live.stop(timeout=0.5)
        self.link.stop(timeout=1.2)
        self.outbox.close()
        log.info(
            "appliance stopped after %d frames, %d objects",
            self.pipeline.counters.frames,
            self.pipeline.counters.embeddings,
        )

"""Wiring for the commands: builds the source, models, sinks and health pieces, runs the pipeline,
and turns failures into one clear line and an exit code (never a traceback for bad input)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .audiofile import AudioFileError, file_info
from .capture import FileReplaySource, MicSource, list_devices
from .classify import Classifiers, classify_clip, load_classifiers
from .clips import ClipKeeper, clips_dir, read_clips
from .command import EXIT_FAILURE, EXIT_OK, fail
from .config import Config
from .feedback import FeedbackError, feedback_dir, file_feedback
from .health import StatusReporter, SystemdNotifier, Watchdog
from .model_manifest import ModelError
from .mqtt import MqttPublisher, MqttSetupError, resolve_mqtt_paths
from .outbox import Outbox, OutboxError
from .paths import state_dir
from .pipeline import Pipeline
from .sinks import EventSink, FanoutSink, JsonlSink, MqttSink, PrintSink, SinkError

OUTPUT_SETUP_ERRORS = (MqttSetupError, OutboxError, SinkError, OSError)

log = logging.getLogger("monitor")


def _fail(message: str) -> int:
    return fail("nursery-monitor", message)


def _load_models(cfg: Config) -> Classifiers | None:
    try:
        return load_classifiers(cfg)
    except ModelError as exc:
        _fail(str(exc))
        return None


def outbox_path(cfg: Config) -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=) or ./state, unless the config names a file."""
    if cfg.mqtt.outbox_path:
        return cfg.resolve_path(cfg.mqtt.outbox_path)
    return state_dir() / "outbox.sqlite"


@dataclass
class Outputs:
    """The event sink and, when MQTT is on, its publisher (for the connection state in status)."""

    sink: EventSink
    publisher: MqttPublisher | None = None
    clips: ClipKeeper | None = None
    """Keeps each event's sound (and publishes it with ``clips.publish``); None when clips are off."""

    def refresh(self, reporter: StatusReporter) -> None:
        if self.publisher is not None:
            health = self.publisher.health()
            reporter.set_mqtt_connected(health.connected, health.to_dict())


def build_outputs(cfg: Config, *, print_events: bool, events_jsonl: str | None, use_mqtt: bool,
                  clips_directory: Path | None = None) -> Outputs | None:
    """Where events go: human lines on stdout, JSON lines, MQTT (with its on-disk outbox), and each event's
    sound into ``clips_directory`` (None: not kept).

    None (after one clear line on stderr) when a setting makes an output unusable: missing password
    variable, unreadable certificate, unwritable outbox, JSON-lines path or clip folder.
    """
    try:
        return _build_outputs(cfg, print_events=print_events, events_jsonl=events_jsonl, use_mqtt=use_mqtt,
                              clips_directory=clips_directory)
    except OUTPUT_SETUP_ERRORS as exc:
        _fail(str(exc))
        return None


def _build_outputs(cfg: Config, *, print_events: bool, events_jsonl: str | None, use_mqtt: bool,
                   clips_directory: Path | None) -> Outputs:
    sinks: list[EventSink] = []
    if print_events:
        sinks.append(PrintSink(sys.stdout))
    if events_jsonl:
        sinks.append(JsonlSink(events_jsonl))
    clips = None
    if clips_directory is not None:
        try:
            clips = ClipKeeper(cfg.clips, clips_directory)
        except OSError as exc:
            raise SinkError(f"cannot use the clip folder {clips_directory}: {exc.strerror or exc}") from None
    publisher = None
    if use_mqtt and cfg.mqtt.enabled:
        path = outbox_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        publisher = MqttPublisher(resolve_mqtt_paths(cfg), cfg.device_id, Outbox(path, cfg.mqtt.outbox_max_rows))
        publisher.start()
        sinks.append(MqttSink(publisher))
        if clips is not None and cfg.clips.publish:
            clips.publish_with(publisher.publish_clip)
    return Outputs(FanoutSink(sinks), publisher, clips)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM / SIGINT set one stop event that every loop watches."""
    stop = threading.Event()

    def handler(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(pipeline: Pipeline, source, outputs: Outputs, stop: threading.Event, watchdog: Watchdog | None = None) -> None:
    if pipeline.notifier is not None:
        pipeline.notifier.ready()
    try:
        stats = pipeline.run(source, stop)
    finally:
        if pipeline.notifier is not None:
            pipeline.notifier.stopping()
        if watchdog is not None:
            watchdog.stop()
        outputs.sink.close(timeout=pipeline.cfg.health.shutdown_seconds)
    log.info("processed %.1f s of audio in %.1f s: %d windows, %.1f%% gated in, %d event messages",
             stats.audio_seconds, stats.processing_seconds, stats.windows, 100 * stats.gate_pass_fraction,
             stats.event_messages)


def run_live(cfg: Config, args: argparse.Namespace) -> int:
    classifiers = _load_models(cfg)
    if classifiers is None:
        return EXIT_FAILURE
    notifier = SystemdNotifier()
    watchdog = Watchdog(notifier, cfg.health.stall_seconds)
    with stop_on_signals() as stop:
        outputs = build_outputs(cfg, print_events=True, events_jsonl=None, use_mqtt=True,
                                clips_directory=clips_dir(cfg) if cfg.clips.enabled else None)
        if outputs is None:
            return EXIT_FAILURE
        source: MicSource | None = None

        def refresh(reporter: StatusReporter) -> None:
            outputs.refresh(reporter)
            if source is not None:
                reporter.update_mic(source.stats())

        pipeline = Pipeline(cfg, classifiers, outputs.sink, heartbeat=watchdog.heartbeat, notifier=notifier,
                            refresh_status=refresh, clips=outputs.clips)
        source = MicSource(cfg.audio, cfg.preprocess, stop_event=stop, on_idle=pipeline.idle)
        watchdog.start()
        with source:
            _run(pipeline, source, outputs, stop, watchdog)
    return EXIT_OK


def _readable_files(paths: list[str]) -> tuple[list[str], list[str]]:
    good, bad = [], []
    for path in paths:
        try:
            rate, channels, frames = file_info(path)
            if frames == 0:
                raise AudioFileError(path, "contains no audio samples")
            good.append(path)
        except AudioFileError as exc:
            _fail(str(exc))
            bad.append(path)
    return good, bad


def run_replay(cfg: Config, args: argparse.Namespace) -> int:
    good, bad = _readable_files(args.files)
    if not good:
        return EXIT_FAILURE
    classifiers = _load_models(cfg)
    if classifiers is None:
        return EXIT_FAILURE
    with stop_on_signals() as stop:
        outputs = build_outputs(cfg, print_events=not args.quiet and args.events_jsonl != "-",
                                events_jsonl=args.events_jsonl, use_mqtt=not args.no_mqtt,
                                clips_directory=Path(args.save_clips) if args.save_clips else None)
        if outputs is None:
            return EXIT_FAILURE
        pipeline = Pipeline(cfg, classifiers, outputs.sink, refresh_status=outputs.refresh, clips=outputs.clips)
        source = FileReplaySource(good, cfg.audio, cfg.preprocess, realtime=args.realtime, stop_event=stop,
                                  on_file=lambda segment: log.info("replaying %s", segment.path))
        try:
            _run(pipeline, source, outputs, stop)
        except AudioFileError as exc:
            return _fail(str(exc))
    return EXIT_FAILURE if bad else EXIT_OK


def classify_files(cfg: Config, args: argparse.Namespace) -> int:
    classifiers = _load_models(cfg)
    if classifiers is None:
        return EXIT_FAILURE
    failures = 0
    for path in args.files:
        try:
            result = classify_clip(path, classifiers, cfg)
        except AudioFileError as exc:
            _fail(str(exc))
            failures += 1
            continue
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            scores = " ".join(f"{label}={p:.2f}" for label, p in result.probs.items())
            print(f"{path}\t{result.label}\t{scores}")
    return EXIT_FAILURE if failures else EXIT_OK


def list_input_devices(cfg: Config, args: argparse.Namespace) -> int:
    try:
        for line in list_devices():
            print(line)
    except Exception as exc:  # PortAudio missing or no sound system: say so, do not trace back
        return _fail(f"cannot list audio devices: {exc}")
    return EXIT_OK


def list_clips(cfg: Config, args: argparse.Namespace) -> int:
    """`nursery-monitor clips`: the most recent saved clips, newest first."""
    directory = Path(args.dir) if args.dir else clips_dir(cfg)
    clips = read_clips(directory)
    if not clips:
        print(f"no clips in {directory}")
        return EXIT_OK
    for info in clips[:args.limit]:
        print(json.dumps({**info.event, "path": str(info.path)}) if args.json else info.line())
    return EXIT_OK


def give_feedback(cfg: Config, args: argparse.Namespace) -> int:
    """`nursery-monitor feedback EVENT_ID LABEL`: the event's clip into the user dataset (monitor.feedback)."""
    directory = Path(args.clips_dir) if args.clips_dir else clips_dir(cfg)
    matches = [info for info in read_clips(directory) if info.event_id.startswith(args.event_id)]
    if len(matches) != 1:
        found = "no clip" if not matches else f"{len(matches)} clips"
        return _fail(f"{found} of an event {args.event_id!r} in {directory} (`nursery-monitor clips` lists them)")
    dataset = Path(args.dataset) if args.dataset else feedback_dir(cfg)
    try:
        filed = file_feedback(matches[0], args.label, dataset)
    except (FeedbackError, OSError) as exc:
        return _fail(f"cannot file the feedback into {dataset}: {exc}")
    was = f" (was filed under {filed.replaced.parent.name})" if filed.replaced else ""
    print(f"filed {matches[0].event['label']} event {matches[0].event_id} as {filed.label}: {filed.path}{was}")
    print(f"retrain with: nursery-monitor build-models --data <your usual data> --data {dataset}")
    return EXIT_OK

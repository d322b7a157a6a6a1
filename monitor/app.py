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
from pathlib import Path

from .audiofile import AudioFileError, file_info
from .classify import Classifiers, classify_clip, load_classifiers
from .config import Config
from .model_manifest import ModelError

log = logging.getLogger("monitor")

EXIT_OK, EXIT_FAILURE = 0, 1


def _fail(message: str) -> int:
    print(f"nursery-monitor: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _load_models(cfg: Config) -> Classifiers | None:
    try:
        return load_classifiers(cfg)
    except ModelError as exc:
        _fail(str(exc))
        return None


def outbox_path(cfg: Config) -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=) or ./state, unless the config names a file."""
    import os

    if cfg.mqtt.outbox_path:
        return cfg.resolve_path(cfg.mqtt.outbox_path)
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "state"
    return Path(base) / "outbox.sqlite"


def build_sink(cfg: Config, *, print_events: bool, events_jsonl: str | None, use_mqtt: bool):
    """Where events go: human lines on stdout, JSON lines, MQTT (with its on-disk outbox)."""
    from .sinks import FanoutSink, JsonlSink, MqttSink, PrintSink

    sinks = []
    if print_events:
        sinks.append(PrintSink(sys.stdout))
    if events_jsonl:
        sinks.append(JsonlSink(events_jsonl))
    if use_mqtt and cfg.mqtt.enabled:
        from .mqtt import MqttPublisher
        from .outbox import Outbox

        path = outbox_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        publisher = MqttPublisher(cfg.mqtt, cfg.device_id, Outbox(path))
        publisher.start()
        sinks.append(MqttSink(publisher))
    return FanoutSink(sinks)


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


def _run_pipeline(cfg: Config, classifiers: Classifiers, source, sink, stop: threading.Event,
                  notifier=None, watchdog=None, status_provider=None) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline(cfg, classifiers, sink, heartbeat=watchdog.heartbeat if watchdog else None)
    pipeline.status_provider = status_provider
    if notifier is not None:
        notifier.ready()
    try:
        stats = pipeline.run(source, stop)
    finally:
        if notifier is not None:
            notifier.stopping()
        if watchdog is not None:
            watchdog.stop()
        sink.close(timeout=cfg.health.shutdown_seconds)
    log.info("processed %.1f s of audio in %.1f s: %d windows, %.1f%% gated in, %d event messages",
             stats.audio_seconds, stats.processing_seconds, stats.windows, 100 * stats.gate_pass_fraction,
             len(stats.events))
    return EXIT_OK


def run_live(cfg: Config, args: argparse.Namespace) -> int:
    from .capture import MicSource
    from .health import SystemdNotifier, Watchdog

    classifiers = _load_models(cfg)
    if classifiers is None:
        return EXIT_FAILURE
    notifier = SystemdNotifier()
    watchdog = Watchdog(notifier, cfg.health.stall_seconds)
    watchdog.start()
    with stop_on_signals() as stop:
        sink = build_sink(cfg, print_events=True, events_jsonl=None, use_mqtt=True)
        source = MicSource(cfg.audio, cfg.preprocess, stop_event=stop)
        return _run_pipeline(cfg, classifiers, source, sink, stop, notifier, watchdog,
                             status_provider=lambda: source.stats().to_dict())


def _readable_files(paths: list[str]) -> tuple[list[str], list[str]]:
    good, bad = [], []
    for path in paths:
        try:
            rate, channels, frames = file_info(path)
            if frames == 0:
                raise AudioFileError(path, "contains no audio samples")
            good.append(path)
        except AudioFileError as exc:
            print(f"nursery-monitor: {exc}", file=sys.stderr)
            bad.append(path)
    return good, bad


def run_replay(cfg: Config, args: argparse.Namespace) -> int:
    from .capture import FileReplaySource

    good, bad = _readable_files(args.files)
    if not good:
        return EXIT_FAILURE
    classifiers = _load_models(cfg)
    if classifiers is None:
        return EXIT_FAILURE
    with stop_on_signals() as stop:
        sink = build_sink(cfg, print_events=not args.quiet and args.events_jsonl != "-",
                          events_jsonl=args.events_jsonl, use_mqtt=not args.no_mqtt)
        source = FileReplaySource(good, cfg.audio, cfg.preprocess, realtime=args.realtime, stop_event=stop)
        try:
            _run_pipeline(cfg, classifiers, source, sink, stop)
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
            print(f"nursery-monitor: {exc}", file=sys.stderr)
            failures += 1
            continue
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            scores = " ".join(f"{label}={p:.2f}" for label, p in result.probs.items())
            print(f"{path}\t{result.label}\t{scores}")
    return EXIT_FAILURE if failures else EXIT_OK


def list_input_devices(cfg: Config, args: argparse.Namespace) -> int:
    from .capture import list_devices

    try:
        for line in list_devices():
            print(line)
    except Exception as exc:  # PortAudio missing or no sound system: say so, do not trace back
        return _fail(f"cannot list audio devices: {exc}")
    return EXIT_OK

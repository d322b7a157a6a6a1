"""`nursery-monitor`: the command line. Parsing and exit codes only; the work is in monitor.app."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .command import EXIT_CONFIG, EXIT_OK, add_config_option, load_command_config, setup_logging

EPILOG = """examples:
  nursery-monitor run --config /etc/nursery-monitor/config.yaml     live microphone, alerts to MQTT
  nursery-monitor replay recording.flac --events-jsonl -            simulate: events as JSON lines
  nursery-monitor replay night.wav --realtime                       paced like a live stream
  nursery-monitor classify clip.wav --json                          one label per file
  nursery-monitor check-config --config config.yaml                 validate before (re)starting
  nursery-monitor clips                                             the sound of recent alerts
  nursery-monitor feedback 54fd669b normal                          "that was not a cry": file it for retraining
  nursery-monitor build-models --data ../shared/data/manifest.csv --data state/feedback    retrain with it
  nursery-monitor build-models                                      train + export from ../shared
  nursery-monitor evaluate --out build/reports/eval                 metrics on the test split
  nursery-monitor audit-labels --manifest my-recordings/            clips whose label AudioSet contradicts
  nursery-monitor bench --hours 2                                   event-level benchmark
  mosquitto_sub -t 'nursery/#' -v                                   watch what is published
"""


DELEGATED = {
    "build-models": "Train and export the models from labelled audio (needs the train extra).",
    "evaluate": "Evaluate the models on a manifest; writes metrics.json, plots, report.",
    "bench": "Event-level benchmark on a long synthetic household stream.",
    "audit-labels": "List the clips whose label YAMNet's AudioSet scores contradict, to listen to (needs the train "
                    "extra).",
}
"""Commands handled by training / export / bench modules with their own option parsers."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery-monitor", description="Recognises infant crying and screaming and publishes alerts to MQTT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nursery-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        add_config_option(sub)
        return sub

    command("run", "Listen to the microphone and publish alerts (the service).")
    replay = command("replay", "Run the same pipeline over audio files instead of the microphone.")
    replay.add_argument("files", nargs="+", help="wav / flac / ogg files, played as one continuous stream")
    replay.add_argument("--realtime", action="store_true", help="pace the replay like a live stream")
    replay.add_argument("--events-jsonl", metavar="PATH|-", help="also write events as JSON lines ('-' = stdout)")
    replay.add_argument("--no-mqtt", action="store_true", help="do not publish (same as mqtt.enabled: false)")
    replay.add_argument("--quiet", action="store_true", help="do not print the human-readable event lines")
    replay.add_argument("--save-clips", metavar="DIR", help="save each event's audio (clips.* settings) in DIR")
    classify = command("classify", "One label per file: Crying, Screaming or Normal.")
    classify.add_argument("files", nargs="+")
    classify.add_argument("--json", action="store_true", help="one JSON object per line with probabilities")
    check = command("check-config", "Validate a config file and print the effective settings.")
    check.add_argument("--defaults", action="store_true", help="print all keys, defaults, descriptions")
    command("devices", "List audio input devices.")
    clips = command("clips", "List recent alert clips: time, label, confidence, duration, event id, file.")
    clips.add_argument("--dir", help="clip folder (default: clips.directory, else the state directory's clips/)")
    clips.add_argument("--limit", type=int, default=20, help="show at most this many (default 20)")
    clips.add_argument("--json", action="store_true", help="one JSON object per clip (its end message and path)")
    feedback = command("feedback", "File an event's clip under its true label in your dataset, for build-models.")
    feedback.add_argument("event_id", help="the event (its id, or a unique start of it, as `clips` lists it)")
    feedback.add_argument("label", choices=("normal", "cry", "scream"), help="what it really was")
    feedback.add_argument("--clips-dir", help="where the clip is (default: as `clips`)")
    feedback.add_argument("--dataset", help="user dataset folder (default: clips.feedback_directory)")
    for name, help in DELEGATED.items():
        commands.add_parser(name, help=help, add_help=False)
    return parser


def _delegate(command: str, argv: list[str]) -> int:
    if command == "build-models":
        from export.build import main as delegated
    elif command == "evaluate":
        from training.evaluate import main as delegated
    elif command == "audit-labels":
        from training.audit import main as delegated
    else:
        from bench.run import main as delegated
    return int(delegated(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:  # their own parsers own every option, --help included
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG

    from .config import default_yaml, describe

    if args.command == "check-config" and args.defaults:
        print(default_yaml(), end="")
        return EXIT_OK
    cfg = load_command_config("nursery-monitor", args.config)
    if cfg is None:
        return EXIT_CONFIG
    setup_logging(cfg.log_level)
    if args.command == "check-config":
        print(f"{args.config or '<defaults>'}: OK")
        for key, value, _ in describe(cfg):
            print(f"  {key} = {json.dumps(value)}")
        return EXIT_OK
    from . import app

    handlers = {"run": app.run_live, "replay": app.run_replay, "classify": app.classify_files,
                "devices": app.list_input_devices, "clips": app.list_clips,
                "feedback": app.give_feedback}
    return handlers[args.command](cfg, args)


if __name__ == "__main__":
    sys.exit(main())

"""What every command shares, so they all behave alike: where ``--config`` comes from, one log format
configured in one place, and one meaning for each exit code."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import Config, ConfigError, default_config_path, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
"""A runtime failure: unreadable audio, missing or corrupt model, a failed build step."""
EXIT_CONFIG = 2
"""Bad configuration or usage: the message names the key (and its YAML line)."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONFIG_HELP = "YAML config (default: $NURSERY_CONFIG or ./config.yaml or built-in defaults)"


def add_config_option(parser: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    """``--config``, found the same way by every command (``run``, ``replay``, ``evaluate``, ``bench`` ...)."""
    parser.add_argument("--config", default=default_config_path(), help=help)


def setup_logging(level: str | int = "INFO") -> None:
    """The one logging set-up: stderr, one format; a no-op once the root logger has a handler."""
    if isinstance(level, str):
        level = getattr(logging, level)
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)


def fail(prog: str, message: object, code: int = EXIT_FAILURE) -> int:
    """One line ``prog: message`` on stderr; returns the exit code to hand back."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def load_command_config(prog: str, path: str | None) -> Config | None:
    """The config, or None after one line naming the bad key (the caller exits with ``EXIT_CONFIG``)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(prog, exc, EXIT_CONFIG)
        return None

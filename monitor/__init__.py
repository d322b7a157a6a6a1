"""Nursery Monitor: recognises infant crying and screaming and publishes alerts to MQTT."""

from __future__ import annotations

import os

__version__ = "0.1.0"

_CACHED = {}


def run_inference(path: str | os.PathLike, config_path: str | os.PathLike | None = None) -> str:
    """Label of one audio file: "Crying", "Screaming" or "Normal" (models loaded once and reused)."""
    from .classify import classify_clip, load_classifiers
    from .config import load_config

    key = str(config_path)
    if key not in _CACHED:
        cfg = load_config(config_path)
        _CACHED[key] = (cfg, load_classifiers(cfg))
    cfg, classifiers = _CACHED[key]
    return classify_clip(path, classifiers, cfg).label

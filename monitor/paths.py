"""Default locations: the shared data and base models beside the checkout, build caches inside it (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$NURSERY_SHARED`` or ``../shared`` beside the checkout."""
    return Path(os.environ.get("NURSERY_SHARED", REPO_ROOT.parent / "shared")).resolve()


def default_manifest_csv() -> Path:
    return shared_dir() / "data" / "manifest.csv"


def default_yamnet_tflite() -> Path:
    return shared_dir() / "models" / "yamnet.tflite"


def build_dir() -> Path:
    """Caches (embeddings, checkpoints, splits): ``$NURSERY_BUILD`` or ``build/`` in the checkout."""
    return Path(os.environ.get("NURSERY_BUILD", REPO_ROOT / "build")).resolve()


def models_dir() -> Path:
    """Runtime artifacts: ``$NURSERY_MODELS`` or ``models/`` in the checkout."""
    return Path(os.environ.get("NURSERY_MODELS", REPO_ROOT / "models")).resolve()


def state_dir() -> Path:
    """Runtime state (outbox, clips): the first of ``$STATE_DIRECTORY`` (systemd ``StateDirectory=``) or ``./state``."""
    return Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "state")

"""Atomic writes for the build caches, so an interrupted or concurrent build never leaves a torn file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def save_npz_atomic(path: Path, **arrays) -> None:
    """np.savez to a per-process temporary name, then an atomic rename: two builds racing on one cache
    both succeed, and a reader sees the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def prune_caches(cache_dir: Path, pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` most recently written files matching ``pattern`` (caches are large)."""
    caches = sorted(Path(cache_dir).glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in caches[keep:]:
        log.info("removing old cache %s", stale)
        stale.unlink(missing_ok=True)

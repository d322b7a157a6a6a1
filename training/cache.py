"""Atomic writes for the build caches, so an interrupted or concurrent build never leaves a torn file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


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

"""Training windows of labelled clips: 0.975 s slices of the conditioned audio, with weak labels cleaned up.

Labels are per clip and weak: a 7 s cry clip has breathing pauses and a scream clip silence around the
scream. Labelling those pauses "Crying" would teach the model that quiet rooms cry, so windows of alert
clips must be active: loud relative to the clip's own loudest windows, above the absolute silence floor,
and voiced by webrtcvad. Normal clips keep every window (silence is Normal).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import webrtcvad

from monitor.audiofile import load_clip
from monitor.config import GateConfig, PreprocessConfig
from monitor.constants import ALERT_LABELS, LABELS, VAD_FRAME_SAMPLES, WINDOW_SAMPLES
from monitor.paths import build_dir
from monitor.preprocess import clip_windows, frame_starts
from monitor.progress import progress_bar
from monitor.signal_helpers import pad_to_window, rms_dbfs, split_frames, voiced_frames

from .cache import prune_caches, save_npz_atomic
from .data import Clip, clips_signature
from .options import apply_options

log = logging.getLogger(__name__)

Rows = TypeVar("Rows")

ACTIVE_MARGIN_DB = 10.0
"""An alert-clip window is active when its RMS is within this many dB of the clip's loudest window."""
CACHE_VERSION = 1
"""Bump when the windowing logic changes, so stale caches are not reused."""
KEEP_CACHES = 6
"""Window caches are ~0.7 GB each: only the most recently written ones are kept (ablation uses five)."""
GATE_SETTINGS_USED = ("vad_aggressiveness", "vad_min_fraction", "silence_dbfs")
"""The runtime gate settings the activity criterion shares (only these key the cache)."""


def gate_settings_used(gate_cfg: GateConfig) -> dict:
    """The part of the gate config that shapes the training windows: for cache keys and metadata."""
    return {name: getattr(gate_cfg, name) for name in GATE_SETTINGS_USED}


def vad_frame_flags(samples16k: np.ndarray, aggressiveness: int) -> np.ndarray:
    """webrtcvad speech flag per consecutive 30 ms frame (a trailing partial frame is dropped)."""
    return voiced_frames(webrtcvad.Vad(int(aggressiveness)), split_frames(samples16k))


def _voiced_fraction(flags: np.ndarray, start: int) -> float:
    """Fraction of the VAD frames lying entirely inside the window starting at ``start``."""
    first = -(-start // VAD_FRAME_SAMPLES)
    last = (start + WINDOW_SAMPLES) // VAD_FRAME_SAMPLES
    inside = flags[first:last]
    return float(inside.mean()) if inside.size else 0.0


def active_window_mask(samples16k: np.ndarray, label: str, hop_samples: int, gate_cfg: GateConfig,
                       margin_db: float = ACTIVE_MARGIN_DB) -> np.ndarray:
    """Which windows of ``clip_windows(samples16k, hop_samples)`` carry the clip's label."""
    windows = clip_windows(samples16k, hop_samples)
    if label not in ALERT_LABELS:
        return np.ones(len(windows), dtype=bool)
    levels = np.array([rms_dbfs(w) for w in windows])
    loud = (levels >= levels.max() - margin_db) & (levels > gate_cfg.silence_dbfs)
    padded = pad_to_window(samples16k)
    flags = vad_frame_flags(padded, gate_cfg.vad_aggressiveness)
    starts = frame_starts(padded.size, hop_samples)
    voiced = np.array([_voiced_fraction(flags, s) >= gate_cfg.vad_min_fraction for s in starts])
    return loud & voiced


def training_windows(samples16k: np.ndarray, label: str, hop_samples: int, gate_cfg: GateConfig) -> list[np.ndarray]:
    """The 0.975 s windows of a conditioned clip that may carry its label (may be empty for an alert clip)."""
    windows = clip_windows(samples16k, hop_samples)
    mask = active_window_mask(samples16k, label, hop_samples, gate_cfg)
    return list(windows[mask])


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """Dataclasses of per-row arrays (``WindowSet``, ``FeatureSet``) -> one of the same type, rows in order."""
    kind = type(parts[0])
    return kind(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(kind)))


@dataclass
class WindowSet:
    """Conditioned (not yet prepared) windows of many clips, one row each, with where they came from."""

    windows: np.ndarray
    """(N, 15600) float32."""
    labels: np.ndarray
    """(N,) int: index into ``LABELS``."""
    clip_index: np.ndarray
    """(N,) int: index into the clip list the set was built from."""
    groups: np.ndarray
    """(N,) str: the clip's group."""
    active: np.ndarray
    """(N,) bool: passes ``active_window_mask`` (always true for Normal clips)."""

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    def of_clips(self, clip_indices: list[int] | np.ndarray) -> WindowSet:
        return self.select(np.isin(self.clip_index, np.asarray(clip_indices)))

    def training_view(self) -> WindowSet:
        """Only the windows allowed to carry their clip's label."""
        return self.select(self.active)


def _empty_set() -> WindowSet:
    return WindowSet(np.zeros((0, WINDOW_SAMPLES), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                     np.zeros(0, dtype="<U1"), np.zeros(0, dtype=bool))


def _cache_key(clips: list[Clip], preprocess_cfg: PreprocessConfig, hop_samples: int, gate_cfg: GateConfig) -> str:
    doc = {
        "version": CACHE_VERSION,
        "clips": clips_signature(clips),
        "preprocess": dataclasses.asdict(preprocess_cfg),
        "gate": gate_settings_used(gate_cfg),
        "hop": hop_samples,
        "margin_db": ACTIVE_MARGIN_DB,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def conditioned_clip(clip: Clip, preprocess_cfg: PreprocessConfig) -> np.ndarray:
    """The runtime's own conditioning chain, plus the training-only options when enabled in the config."""
    samples = load_clip(clip.path, preprocess_cfg)
    if preprocess_cfg.noise_reduction or preprocess_cfg.pitch_normalisation:
        samples = apply_options(samples, preprocess_cfg)
    return samples


def _compute_window_set(clips: list[Clip], preprocess_cfg: PreprocessConfig, hop_samples: int,
                        gate_cfg: GateConfig, progress: bool) -> WindowSet:
    parts: list[WindowSet] = []
    for index, clip in enumerate(progress_bar(clips, desc="windows", unit="clip", enabled=progress)):
        samples = conditioned_clip(clip, preprocess_cfg)
        windows = clip_windows(samples, hop_samples)
        active = active_window_mask(samples, clip.label, hop_samples, gate_cfg)
        if not active.any():
            log.warning("%s: no active window (label %s); its windows are kept for evaluation only",
                        clip.path, clip.label)
        n = len(windows)
        parts.append(WindowSet(windows.astype(np.float32), np.full(n, LABELS.index(clip.label)),
                               np.full(n, index), np.full(n, clip.group), active))
    if not parts:
        return _empty_set()
    return concat_rows(parts)


def build_window_set(clips: list[Clip], preprocess_cfg: PreprocessConfig, hop_samples: int,
                     gate_cfg: GateConfig | None = None, *, cache_dir: Path | None = None,
                     progress: bool = True) -> WindowSet:
    """Every window of every clip (with its ``active`` flag), cached as .npz keyed by the inputs and settings."""
    gate_cfg = gate_cfg or GateConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else build_dir() / "windows"
    cache = cache_dir / f"windows-{_cache_key(clips, preprocess_cfg, hop_samples, gate_cfg)}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            log.info("window set from cache %s", cache)
            return WindowSet(**{f.name: data[f.name] for f in dataclasses.fields(WindowSet)})
    window_set = _compute_window_set(clips, preprocess_cfg, hop_samples, gate_cfg, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(cache, **{f.name: getattr(window_set, f.name) for f in dataclasses.fields(WindowSet)})
    prune_caches(cache_dir, "windows-*.npz", KEEP_CACHES)
    log.info("%d windows (%d active) of %d clips cached in %s", len(window_set), int(window_set.active.sum()),
             len(clips), cache)
    return window_set

"""What a teacher (YAMNet) says about unlabelled windows: the targets of the Wav2Vec2 pretraining.

The student learns YAMNet's 1024-d embedding and its 521 AudioSet scores for windows of every training
clip whatever its label, plus mixtures of two windows, so it inherits AudioSet's knowledge of cats, music
and machines instead of learning "loud harmonic sound = cry" from a few hundred cries. The teacher sees
exactly what it sees at runtime (``prepare_batch`` of the conditioned window); the targets are cached under
the build folder, keyed by the teacher, the preprocessing settings and the bytes of every window, so a
target row can only ever be reused for the window it was computed from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from monitor.config import PreprocessConfig
from monitor.constants import YAMNET_AUDIOSET_CLASSES, YAMNET_EMBEDDING_SIZE
from monitor.model_manifest import sha256_file
from monitor.paths import build_dir
from monitor.preprocess import prepare_batch
from monitor.progress import progress_bar

from .augment import AugmentParams, augment_window, mix_at_snr
from .cache import prune_caches, save_npz_atomic
from .yamnet_features import DEFAULT_BATCH, BaseModel, make_session, run_batches

log = logging.getLogger(__name__)

CACHE_SUBDIR = "teacher"
CACHE_VERSION = 1
"""Bump when the way targets are computed changes."""
KEEP_CACHES = 4
"""Target files are ~150 MB for a full pretraining set: only the most recently written ones are kept."""
CHUNK_WINDOWS = 2048
"""Windows prepared and hashed at a time: bounds the memory of the prepared copy (~130 MB)."""
MIXTURE_AUGMENT = AugmentParams(noise_probability=0.0)
"""After mixing two windows: the usual shift, low-pass and gain (the mixing replaces background noise)."""


class Teacher(Protocol):
    """Maps prepared windows (N, 15600) to (embeddings (N, 1024), AudioSet scores (N, 521))."""

    identity: str
    """Changes whenever the outputs could: part of the cache key."""

    def __call__(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class YamnetTeacher:
    """The converted YAMNet base model run by ONNX Runtime."""

    def __init__(self, base: BaseModel, threads: int = 1):
        self.identity = f"yamnet-onnx-{sha256_file(base.path)}"
        self._session = make_session(base.path, threads)
        self._batch = DEFAULT_BATCH if base.batched else 1

    def __call__(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, embeddings = run_batches(self._session, prepared, self._batch)
        return embeddings, scores


@dataclass
class TeacherTargets:
    """One row per window, in the order of the windows they were computed from."""

    embeddings: np.ndarray
    """(N, 1024) float32."""
    scores: np.ndarray
    """(N, 521) float32 probabilities."""

    def __len__(self) -> int:
        return len(self.embeddings)

    def select(self, rows: np.ndarray) -> TeacherTargets:
        return TeacherTargets(self.embeddings[rows], self.scores[rows])


def mixture_windows(windows: np.ndarray, count: int, snr_db_range: tuple[float, float],
                    rng: np.random.Generator, augment: AugmentParams = MIXTURE_AUGMENT) -> np.ndarray:
    """``count`` mixtures of two different random windows at a random SNR, each then augmented once."""
    if len(windows) < 2 or count <= 0:
        return np.zeros((0, windows.shape[1]), np.float32)
    out = np.empty((count, windows.shape[1]), np.float32)
    for row in range(count):
        first, second = rng.choice(len(windows), size=2, replace=False)
        mixed = mix_at_snr(windows[first], windows[second], float(rng.uniform(*snr_db_range)))
        out[row] = augment_window(mixed, rng, None, augment)
    return out


def targets_key(windows: np.ndarray, preprocess_cfg: PreprocessConfig, teacher_identity: str) -> str:
    """Digest of everything a target row depends on, the window bytes included (hashed a chunk at a time)."""
    digest = hashlib.sha256(f"{CACHE_VERSION}|{teacher_identity}|{dataclasses.asdict(preprocess_cfg)}|"
                            f"{windows.shape}".encode())
    for start in range(0, len(windows), CHUNK_WINDOWS):
        digest.update(np.ascontiguousarray(windows[start:start + CHUNK_WINDOWS], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def compute_targets(windows: np.ndarray, preprocess_cfg: PreprocessConfig, teacher: Teacher,
                    progress: bool = False) -> TeacherTargets:
    """The teacher's outputs for conditioned windows, prepared as the runtime prepares them."""
    embeddings = np.zeros((len(windows), YAMNET_EMBEDDING_SIZE), np.float32)
    scores = np.zeros((len(windows), YAMNET_AUDIOSET_CLASSES), np.float32)
    starts = range(0, len(windows), CHUNK_WINDOWS)
    for start in progress_bar(starts, desc="teacher", unit="chunk", enabled=progress):
        chunk = slice(start, start + CHUNK_WINDOWS)
        embeddings[chunk], scores[chunk] = teacher(prepare_batch(windows[chunk], preprocess_cfg))
    return TeacherTargets(embeddings, scores)


def teacher_targets(windows: np.ndarray, preprocess_cfg: PreprocessConfig, teacher: Teacher,
                    cache_dir: Path | None = None, progress: bool = False) -> TeacherTargets:
    """``compute_targets``, cached as .npz under ``build/teacher`` (or ``cache_dir``)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else build_dir() / CACHE_SUBDIR
    cache = cache_dir / f"targets-{targets_key(windows, preprocess_cfg, teacher.identity)}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            log.info("teacher targets from cache %s", cache)
            return TeacherTargets(data["embeddings"], data["scores"])
    targets = compute_targets(windows, preprocess_cfg, teacher, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(cache, embeddings=targets.embeddings, scores=targets.scores)
    prune_caches(cache_dir, "targets-*.npz", KEEP_CACHES)
    log.info("teacher targets of %d windows cached in %s", len(windows), cache)
    return targets

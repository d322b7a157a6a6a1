"""What every way of pretraining the compact Wav2Vec2 encoder shares: its length, learning rate, and the
unlabelled windows it learns from (train and val clips and mixtures of two; the test split never)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .teacher_targets import mixture_windows
from .windows import WindowSet

PRETRAIN_STEPS = 1000
"""About 2 minutes on 2 free cores: two thirds of a pass over ``PRETRAIN_WINDOWS``. 1,500 steps put a clean-clone
build at 25.8 minutes on a slow run of the machine, over its 25. On val (12 CPU minutes on one core), 4 minutes of
YAMNet pretraining gave the best clip macro-F1 and Screaming recall and 8 minutes the best window macro-F1; all
runs, from scratch too, were within 0.03 of each other."""
PRETRAIN_WINDOWS = 24_000
"""Windows (clean + mixtures) to learn from: all ~15,200 clean ones of the shared train + val audio and half as many
mixtures. YAMNet labels a window in ~1.5 ms, a student step takes ~7 ms, so variety costs little."""


@dataclass(frozen=True)
class PretrainSettings:
    """The length and data of a pretraining run; each objective adds its own settings."""

    steps: int = PRETRAIN_STEPS
    windows: int = PRETRAIN_WINDOWS
    splits: tuple[str, ...] = ("train", "val")
    """Clips whose audio (labels unused) the encoder learns from; the test split never."""
    mixtures_per_window: float = 0.5
    """Mixtures of two random windows added per clean window."""
    mixture_snr_db: tuple[float, float] = (-5.0, 5.0)
    """Level of the second window relative to the first: both stay audible."""
    batch_size: int = 16
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    """Peak learning rate of the fine-tuning that follows (lower than from scratch: the encoder is not random)."""

    def window_count(self, cap_seconds: float) -> int:
        """Windows (clean + mixtures) to learn from within a cap of ``cap_seconds``."""
        return self.windows


def pretraining_windows(sets: dict[str, WindowSet], settings: PretrainSettings, max_windows: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Every window of the clips in ``settings.splits`` (pauses and silence too: no label is needed) and mixtures
    of two of them, at most ``max_windows`` in all (a random subset of the clean ones when over)."""
    if "test" in settings.splits:
        raise ValueError("the test split is never used for training, not even without its labels")
    clean = np.concatenate([sets[name].windows for name in settings.splits])
    wanted_clean = int(max_windows / (1.0 + settings.mixtures_per_window))
    if len(clean) > wanted_clean:
        clean = clean[np.sort(rng.choice(len(clean), size=wanted_clean, replace=False))]
    mixtures = mixture_windows(clean, int(len(clean) * settings.mixtures_per_window), settings.mixture_snr_db, rng)
    return np.concatenate([clean, mixtures])

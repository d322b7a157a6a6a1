"""Each model's probabilities averaged over the last few windows, before fusion.

A cry is sustained: several windows in a row lean towards it. A meow, a door or a synth note moves one window.
Averaging over ``fusion.smooth_windows`` consecutive windows (about 1-2 s at the default hop) lowers the score of
the single loud window more than that of a sustained cry. Measured on cross-fitted window scores of the train and
val clips (``training/temporal_study.py``) the plain trailing mean separated cries from Normal windows better
than a logistic model learned over the same context, so the runtime keeps the mean; ``build-models`` sweeps the
window count with the other operating-point settings (``bench.tune``).

Windows the gate skipped, and a Wav2Vec2 the cascade skipped, are absent (NaN): the mean is over the present
rows, so a cry after silence scores from its first window on. A stream discontinuity starts a new mean. With a
mean over more than one window the cascade is no longer exact (a skipped Wav2Vec2 row is missing from the next
windows' means too); the bench measures the difference against Wav2Vec2 on every window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from .constants import LABELS
from .fusion import MODEL_NAMES


def lagged_rows(values: np.ndarray, windows: int,
                segment: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each lag 0 ... windows - 1: every row's row ``lag`` places back, and an (N,) mask of where that row
    exists in the same ``segment`` (an (N,) id; None = one segment). Where it does not, the row itself stands in."""
    rows = np.asarray(values)
    index = np.arange(len(rows))
    segment = np.zeros(len(rows), np.int64) if segment is None else np.asarray(segment)
    for lag in range(max(1, windows)):
        source = index - lag
        usable = source >= 0
        source = np.where(usable, source, index)
        usable &= segment[source] == segment
        yield np.where(usable[:, None], rows[source], rows), usable


def trailing_mean(values: np.ndarray, windows: int, segment: np.ndarray | None = None) -> np.ndarray:
    """(N, C) -> (N, C): row i is the mean of the present (non-NaN) rows among rows i - windows + 1 ... i of the
    same ``segment`` (an (N,) id; None = one segment); NaN where none of them is present."""
    rows = np.asarray(values, dtype=np.float64)
    total = np.zeros_like(rows)
    present = np.zeros((len(rows), 1))
    for lagged, usable in lagged_rows(rows, windows, segment):
        here = usable[:, None] & ~np.isnan(lagged[:, :1])
        total += np.where(here, lagged, 0.0)
        present += here
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, total / present, np.nan)


def contiguous_segments(end_seconds: np.ndarray, hop_seconds: float, tolerance: float = 1e-3) -> np.ndarray:
    """Segment id per window of a recorded stream: a new segment wherever the next window is not one hop later
    (a new replay file, a reopened microphone): what ``ProbabilitySmoother.reset`` does live."""
    steps = np.diff(np.asarray(end_seconds, dtype=np.float64))
    return np.concatenate([[0], np.cumsum(np.abs(steps - hop_seconds) > tolerance)]).astype(np.int64)


class ProbabilitySmoother:
    """The live form of ``trailing_mean``: the last ``windows`` rows of each model, one window at a time."""

    def __init__(self, windows: int):
        self.windows = max(1, int(windows))
        self._history: dict[str, deque] = {name: deque(maxlen=self.windows) for name in MODEL_NAMES}

    def reset(self) -> None:
        for rows in self._history.values():
            rows.clear()

    def push(self, model_probs: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """One window's probabilities per model (None: the gate skipped it; a missing model: absent this window)
        -> the smoothed probabilities of each model with any present row in the context."""
        smoothed = {}
        for name, rows in self._history.items():
            value = (model_probs or {}).get(name)
            row = None if value is None else np.asarray(value, dtype=np.float64).reshape(len(LABELS))
            rows.append(None if row is None or np.isnan(row[0]) else row)
            mean = _mean_of_present(rows)
            if mean is not None:
                smoothed[name] = mean
        return smoothed


def _mean_of_present(rows: deque) -> np.ndarray | None:
    """``trailing_mean``'s last row, without the rest: the present rows summed newest first, in the order and float64
    arithmetic the batch form uses, so the live and the replayed means are equal to the bit. None when no row is
    present. Runs once per model and window, where a call of ``trailing_mean`` cost about 0.1 ms."""
    total, present = None, 0
    for row in reversed(rows):
        if row is not None:
            total = row if total is None else total + row
            present += 1
    if total is None or present == 1:
        return total
    return total / float(present)

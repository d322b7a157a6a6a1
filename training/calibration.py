"""Temperature scaling and calibration error, shared by the YAMNet and Wav2Vec2 branches (numpy only).

Fusion averages the two models' probabilities and compares them with fixed thresholds, so each model's
probabilities must mean what they say: one temperature per model, fitted on the validation split, is
stored in the model manifest and applied by the runtime as ``softmax(logits / temperature)``.
"""

from __future__ import annotations

import numpy as np

from monitor.constants import EPSILON
from monitor.signal_helpers import softmax

TEMPERATURE_RANGE = (0.05, 20.0)
"""Search interval for the temperature (searched on a log scale)."""
GRID_POINTS = 60
GOLDEN_ITERATIONS = 60
DEFAULT_ECE_BINS = 15
_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true labels under ``softmax(logits / temperature)``."""
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(picked + EPSILON)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising validation NLL: a log-spaced grid, then golden-section search around its best point."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on zero examples")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, float(np.exp(log_t)))

    grid = np.linspace(np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]), GRID_POINTS)
    losses = [loss(g) for g in grid]
    best = int(np.argmin(losses))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    a, b = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(GOLDEN_ITERATIONS):
        if loss_a < loss_b:
            hi, b, loss_b = b, a, loss_a
            a = hi - _INV_PHI * (hi - lo)
            loss_a = loss(a)
        else:
            lo, a, loss_a = a, b, loss_b
            b = lo + _INV_PHI * (hi - lo)
            loss_b = loss(b)
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins of the top prediction."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)

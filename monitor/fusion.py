"""Per-window fusion of the classifiers: a weighted probability average and a three-voter majority.

Voters: the YAMNet head (argmax), the Wav2Vec2 classifier (argmax) and YAMNet's own AudioSet
scores (cry / scream rows against a threshold). A window alerts when the average names an alert
label with enough probability and, with ``require_vote``, the majority agrees: a single model
that hallucinates a cry is outvoted. Pure functions, no state: smoothing over time is events.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import FusionConfig
from .constants import ALERT_LABELS, LABELS, YAMNET_AUDIOSET_CLASSES, YAMNET_VOTER_CLASSES

VOTER_YAMNET = "yamnet"
VOTER_WAV2VEC2 = "wav2vec2"
VOTER_AUDIOSET = "audioset"
MODEL_NAMES = (VOTER_YAMNET, VOTER_WAV2VEC2)
"""Classifiers whose probabilities are averaged (and reported per event)."""

NORMAL_LABEL = next(label for label in LABELS if label not in ALERT_LABELS)


@dataclass(frozen=True)
class FusedWindow:
    probs: np.ndarray = field(repr=False)
    """Weighted average of the available models' probabilities, in LABELS order."""
    average_label: str
    votes: dict[str, str]
    """Voter name (yamnet, wav2vec2, audioset) -> the label it votes for; absent voters are left out."""
    vote_label: str
    """Label with a strict majority of the votes; the average label when there is none."""
    alert_label: str | None
    """Crying / Screaming when this window counts towards an event of that label, else None."""
    alert_score: float
    """Averaged probability of the alert label, or of the likelier alert label when there is none."""

    def prob(self, label: str) -> float:
        return float(self.probs[LABELS.index(label)])


def as_probabilities(name: str, values: np.ndarray, size: int = len(LABELS)) -> np.ndarray:
    """One window's scores as a float64 vector of ``size``; a (1, size) batch row is accepted."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (size,):
        raise ValueError(f"{name} scores must have shape ({size},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} scores contain NaN or Inf")
    return array


def average_probabilities(yamnet_probs: np.ndarray, wav2vec2_probs: np.ndarray | None,
                          cfg: FusionConfig) -> np.ndarray:
    """Weighted mean of the available models, weights renormalised over them.

    Should every available model have weight 0 (YAMNet weighted 0 and Wav2Vec2 absent), they count
    equally: a window is never left without scores.
    """
    models = [(as_probabilities(VOTER_YAMNET, yamnet_probs), cfg.weight_yamnet)]
    if wav2vec2_probs is not None:
        models.append((as_probabilities(VOTER_WAV2VEC2, wav2vec2_probs), cfg.weight_wav2vec2))
    weights = np.array([weight for _, weight in models], dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return np.average(np.stack([probs for probs, _ in models]), axis=0, weights=weights)


def argmax_label(probs: np.ndarray) -> str:
    """Most likely label; a tie goes to the label listed first in LABELS."""
    return LABELS[int(np.argmax(probs))]


def audioset_vote(audioset_scores: np.ndarray, threshold: float) -> str:
    """YAMNet's AudioSet rows as a voter: the alert label whose best row reaches ``threshold``.

    When both reach it the higher score wins (a tie goes to the label listed first in ALERT_LABELS).
    """
    scores = as_probabilities(VOTER_AUDIOSET, audioset_scores, YAMNET_AUDIOSET_CLASSES)
    best = {label: float(np.max(scores[list(YAMNET_VOTER_CLASSES[label])])) for label in ALERT_LABELS}
    reached = [label for label in ALERT_LABELS if best[label] >= threshold]
    return max(reached, key=lambda label: best[label]) if reached else NORMAL_LABEL


def majority_label(votes: dict[str, str], fallback: str) -> str:
    """The label more than half of the voters chose; ``fallback`` without such a majority."""
    counts: dict[str, int] = {}
    for label in votes.values():
        counts[label] = counts.get(label, 0) + 1
    winners = [label for label, count in counts.items() if 2 * count > len(votes)]
    return winners[0] if winners else fallback


def wav2vec2_decisive_from(fusion: FusionConfig) -> float:
    """YAMNet's total alert probability (Crying + Screaming) below which Wav2Vec2 cannot change a window's outcome.

    There, even a Wav2Vec2 certain of an alert label leaves the fused probability of every alert label (and of both
    together) under ``exit_threshold`` <= ``enter_threshold``: the window is a miss for the event tracker with or
    without it, and the events are the same. Without Wav2Vec2 the fused probabilities are YAMNet's own, which are
    under the bar too. -inf (always run it) when YAMNet has no weight.
    """
    total = fusion.weight_yamnet + fusion.weight_wav2vec2
    share_yamnet = fusion.weight_yamnet / total if total > 0 else 0.5
    if share_yamnet <= 0:
        return float("-inf")
    return (fusion.exit_threshold - (1.0 - share_yamnet)) / share_yamnet


ALERT_ROWS = [LABELS.index(label) for label in ALERT_LABELS]


def alert_probability(probs: np.ndarray) -> np.ndarray:
    """Total probability of the alert labels, per row of a (..., 3) array."""
    return np.sum(np.asarray(probs)[..., ALERT_ROWS], axis=-1)


def fuse_window(yamnet_probs: np.ndarray, wav2vec2_probs: np.ndarray | None,
                audioset_scores: np.ndarray | None, cfg: FusionConfig) -> FusedWindow:
    probs = average_probabilities(yamnet_probs, wav2vec2_probs, cfg)
    average_label = argmax_label(probs)
    votes = {VOTER_YAMNET: argmax_label(as_probabilities(VOTER_YAMNET, yamnet_probs))}
    if wav2vec2_probs is not None:
        votes[VOTER_WAV2VEC2] = argmax_label(as_probabilities(VOTER_WAV2VEC2, wav2vec2_probs))
    if audioset_scores is not None:
        votes[VOTER_AUDIOSET] = audioset_vote(audioset_scores, cfg.audioset_vote_threshold)
    vote_label = majority_label(votes, fallback=average_label)
    alert_probs = {label: float(probs[LABELS.index(label)]) for label in ALERT_LABELS}
    alerting = (average_label in ALERT_LABELS
                and alert_probs[average_label] >= cfg.enter_threshold
                and (not cfg.require_vote or vote_label == average_label))
    alert_label = average_label if alerting else None
    alert_score = alert_probs[alert_label] if alert_label else max(alert_probs.values())
    return FusedWindow(probs=probs, average_label=average_label, votes=votes, vote_label=vote_label,
                       alert_label=alert_label, alert_score=alert_score)

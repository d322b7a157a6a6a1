"""Per-window fusion of the classifiers: a weighted probability average and a three-voter majority.

Voters: the YAMNet head (argmax), the Wav2Vec2 classifier (argmax) and YAMNet's own AudioSet
scores (cry / scream rows against a threshold). A window alerts when the average names an alert
label with enough probability (that label's enter threshold) and, with ``require_vote``, the majority
agrees: a single model that hallucinates a cry is outvoted. With ``alert_on: sum`` the probability is that of
Crying and Screaming together and the alarm is named after the likelier of the two, so models that disagree
on cry or scream but agree on "not Normal" still raise it. AudioSet's laughter, cat and animal rows veto an alert
(``veto_laughter``, ``veto_cat``, ``veto_animal``): the heads have heard two laughing babies, AudioSet thousands.
Pure functions, no state: smoothing over time is monitor/smoothing.py, events are monitor/events.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import FusionConfig
from .constants import (
    ALERT_LABELS,
    ALERT_ON_SUM,
    LABELS,
    YAMNET_AUDIOSET_CLASSES,
    YAMNET_VETO_CLASSES,
    YAMNET_VOTER_CLASSES,
)

VOTER_YAMNET = "yamnet"
VOTER_WAV2VEC2 = "wav2vec2"
VOTER_AUDIOSET = "audioset"
MODEL_NAMES = (VOTER_YAMNET, VOTER_WAV2VEC2)
"""Classifiers whose probabilities are averaged (and reported per event)."""

NORMAL_LABEL = next(label for label in LABELS if label not in ALERT_LABELS)
ALERT_ROWS = [LABELS.index(label) for label in ALERT_LABELS]
_ALERT_INDEX = np.asarray(ALERT_ROWS)
_IS_ALERT_ROW = np.isin(np.arange(len(LABELS)), ALERT_ROWS)
"""Per index into LABELS: is it an alert label (a lookup, where ``np.isin`` costs ~25 us a window live)."""
_LABEL_INDEX = np.arange(len(LABELS))
VETOES = tuple(YAMNET_VETO_CLASSES)
"""AudioSet veto categories, in the order of their columns in ``audioset_evidence`` (after the alert labels')."""
VETO_OFF = 1.0
"""A veto threshold at this turns the veto off (``veto_laughter: 1``); AudioSet's sigmoid can round to 1.0 itself, so
the comparison alone would not."""
AUDIOSET_ROWS = tuple(sorted({row for groups in (YAMNET_VOTER_CLASSES, YAMNET_VETO_CLASSES)
                              for rows in groups.values() for row in rows}))
"""The only AudioSet rows fusion reads (the sweep records just these per window)."""


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
    """What the window's alert was judged by: the averaged probability of the alert label (of the likelier alert
    label when there is none), or of Crying + Screaming with ``alert_on: sum``."""
    alert_mass: float
    """Averaged probability of Crying + Screaming together."""
    summed: bool = False
    """``alert_on: sum``: an open event of either label is kept alive by both labels together."""
    vetoed_by: str | None = None
    """The ``VETOES`` category AudioSet heard over any cry or scream, which kept the window from alerting."""
    heard_veto: str | None = None
    """The ``VETOES`` category AudioSet hears over any cry or scream, whether or not the window would alert."""
    sustained: bool = False
    """The window counts towards a sustained cry (``sustained_windows``)."""

    def prob(self, label: str) -> float:
        return float(self.probs[LABELS.index(label)])

    @property
    def label(self) -> str:
        """The default fusion's label: the likeliest averaged one, but Normal when that is a cry or scream that
        AudioSet hears as laughter, a cat or an animal, as the monitor's alarms do (``nursery-monitor classify``)."""
        vetoed = self.heard_veto is not None and self.average_label in ALERT_LABELS
        return NORMAL_LABEL if vetoed else self.average_label

    @property
    def label_probs(self) -> np.ndarray:
        """``probs`` as ``label`` reads them: where a veto names Normal, the cry and scream probability is Normal's."""
        if self.label == self.average_label:
            return self.probs
        moved = np.zeros_like(self.probs)
        moved[LABELS.index(NORMAL_LABEL)] = self.probs.sum()
        return moved

    def score_of(self, label: str) -> float:
        """What keeps an open event of ``label`` alive (against ``exit_threshold``)."""
        return self.alert_mass if self.summed else self.prob(label)


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


def weighted_average(yamnet: np.ndarray, wav2vec2: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    """(N, 3) weighted mean of the models present in each row (a NaN Wav2Vec2 row is absent), the weights
    renormalised over them. Should every present model weigh 0 (YAMNet weighted 0 and Wav2Vec2 absent), they count
    equally: a window is never left without scores."""
    present = ~np.isnan(wav2vec2[:, 0])
    weight_y = np.full(len(yamnet), float(cfg.weight_yamnet))
    weight_w = np.where(present, float(cfg.weight_wav2vec2), 0.0)
    none_weighted = weight_y + weight_w <= 0
    if none_weighted.any():
        weight_y[none_weighted], weight_w[none_weighted] = 1.0, present[none_weighted].astype(np.float64)
    wav2vec2 = np.where(np.isnan(wav2vec2), 0.0, wav2vec2)
    return (weight_y[:, None] * yamnet + weight_w[:, None] * wav2vec2) / (weight_y + weight_w)[:, None]


def average_probabilities(yamnet_probs: np.ndarray, wav2vec2_probs: np.ndarray | None,
                          cfg: FusionConfig) -> np.ndarray:
    """One window's weighted mean (``weighted_average``)."""
    yamnet = as_probabilities(VOTER_YAMNET, yamnet_probs)[None]
    wav2vec2 = np.full_like(yamnet, np.nan) if wav2vec2_probs is None else as_probabilities(
        VOTER_WAV2VEC2, wav2vec2_probs)[None]
    return weighted_average(yamnet, wav2vec2, cfg)[0]


def argmax_label(probs: np.ndarray) -> str:
    """Most likely label; a tie goes to the label listed first in LABELS."""
    return LABELS[int(np.argmax(probs))]


def audioset_votes(best: np.ndarray, threshold: float) -> np.ndarray:
    """YAMNet's AudioSet rows as a voter, per row of ``audioset_evidence``: the alert label whose best row reaches
    ``threshold`` (the higher score when both do; a tie goes to the label listed first in ALERT_LABELS), else
    Normal. Indices into LABELS."""
    best = best[:, :len(ALERT_LABELS)]
    reached = best >= threshold
    strongest = np.argmax(np.where(reached, best, -np.inf), axis=1)
    return np.where(reached.any(axis=1), _ALERT_INDEX[strongest], LABELS.index(NORMAL_LABEL))


def audioset_vote(audioset_scores: np.ndarray, threshold: float) -> str:
    scores = as_probabilities(VOTER_AUDIOSET, audioset_scores, YAMNET_AUDIOSET_CLASSES)
    return LABELS[int(audioset_votes(audioset_evidence(scores[None]), threshold)[0])]


def majority_labels(votes: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row of (N, voters) label indices (-1 = absent voter): the label more than half of the present voters
    chose, else ``fallback``."""
    voters = (votes >= 0).sum(axis=1)
    counts = (votes[:, :, None] == _LABEL_INDEX).sum(axis=1)
    majority = 2 * counts > voters[:, None]
    return np.where(majority.any(axis=1), np.argmax(majority, axis=1), fallback)


def majority_label(votes: dict[str, str], fallback: str) -> str:
    """The label more than half of the voters chose; ``fallback`` without such a majority."""
    row = np.array([[LABELS.index(label) for label in votes.values()]]).reshape(1, -1)
    return LABELS[int(majority_labels(row, np.array([LABELS.index(fallback)]))[0])]


def wav2vec2_decisive_from(fusion: FusionConfig) -> float:
    """YAMNet's total alert probability (Crying + Screaming) below which Wav2Vec2 cannot change a window's outcome.

    There, even a Wav2Vec2 certain of an alert label leaves the fused probability of every alert label (and of both
    together) under ``exit_threshold`` <= ``enter_threshold`` and under ``sustained_threshold``: the window is a miss
    for the event tracker with or without it, counts towards no sustained cry, and the events are the same. Without
    Wav2Vec2 the fused probabilities are YAMNet's own, which are under the bar too. -inf (always run it) when YAMNet
    has no weight.
    """
    total = fusion.weight_yamnet + fusion.weight_wav2vec2
    share_yamnet = fusion.weight_yamnet / total if total > 0 else 0.5
    if share_yamnet <= 0:
        return float("-inf")
    bar = min(fusion.exit_threshold, fusion.sustained_threshold) if fusion.sustained else fusion.exit_threshold
    return (bar - (1.0 - share_yamnet)) / share_yamnet


def sustained_windows(alert_mass: np.ndarray, heard_veto: np.ndarray | None, cfg: FusionConfig) -> np.ndarray:
    """(N,) per fused window: does it count towards a sustained cry (``fusion.sustained_seconds``)? Crying +
    Screaming at ``sustained_threshold`` or more, and no AudioSet veto category heard over the cry. All False when
    the path is off."""
    mass = np.asarray(alert_mass, dtype=np.float64)
    if not cfg.sustained:
        return np.zeros(mass.shape, bool)
    unvetoed = np.ones(mass.shape, bool) if heard_veto is None else np.asarray(heard_veto) < 0
    return (mass >= cfg.sustained_threshold) & unvetoed


def alert_probability(probs: np.ndarray) -> np.ndarray:
    """Total probability of the alert labels, per row of a (..., 3) array."""
    return np.sum(np.asarray(probs)[..., _ALERT_INDEX], axis=-1)


@dataclass(frozen=True)
class FusedBatch:
    """Fusion of many windows at once (the threshold sweep re-fuses hours of recorded scores per setting)."""

    probs: np.ndarray
    """(N, 3) weighted averages in LABELS order."""
    votes: dict[str, np.ndarray]
    """Voter -> (N,) index into LABELS of its vote; -1 where the voter is absent."""
    vote_label: np.ndarray
    alert_label: np.ndarray
    """(N,) index into LABELS of the label the window counts towards, -1 for none."""
    alert_score: np.ndarray
    average_label: np.ndarray
    """(N,) index into LABELS of the likeliest averaged label."""
    alert_mass: np.ndarray
    summed: bool = False
    vetoed_by: np.ndarray | None = None
    """(N,) index into VETOES of the category that kept the window from alerting, -1 for none; None = no AudioSet
    scores."""
    heard_veto: np.ndarray | None = None
    """(N,) index into VETOES of the category AudioSet hears over any cry or scream, alerting or not; -1 for none."""
    sustained: np.ndarray | None = None
    """(N,) bool: the window counts towards a sustained cry (``sustained_windows``)."""

    def window(self, i: int) -> FusedWindow:
        votes = {voter: LABELS[int(labels[i])] for voter, labels in self.votes.items() if labels[i] >= 0}
        alert = int(self.alert_label[i])
        return FusedWindow(probs=self.probs[i], average_label=LABELS[int(self.average_label[i])], votes=votes,
                           vote_label=LABELS[int(self.vote_label[i])],
                           alert_label=LABELS[alert] if alert >= 0 else None, alert_score=float(self.alert_score[i]),
                           alert_mass=float(self.alert_mass[i]), summed=self.summed,
                           vetoed_by=_veto_name(self.vetoed_by, i), heard_veto=_veto_name(self.heard_veto, i),
                           sustained=bool(self.sustained is not None and self.sustained[i]))


def _veto_name(categories: np.ndarray | None, i: int) -> str | None:
    return None if categories is None or categories[i] < 0 else VETOES[int(categories[i])]


_EVIDENCE_GROUPS = [*(YAMNET_VOTER_CLASSES[label] for label in ALERT_LABELS), *YAMNET_VETO_CLASSES.values()]
_EVIDENCE_STARTS = np.cumsum([0, *(len(group) for group in _EVIDENCE_GROUPS[:-1])])
"""Where each column group of ``audioset_evidence`` starts among the gathered rows (one gather and one reduce,
not one of each per group: the live path calls it every window)."""


def _evidence_columns(rows: tuple[int, ...] | None) -> np.ndarray:
    where = {row: column for column, row in enumerate(rows)} if rows is not None else None
    return np.array([row if where is None else where[row] for group in _EVIDENCE_GROUPS for row in group])


_EVIDENCE_COLUMNS = _evidence_columns(None)


def audioset_evidence(scores: np.ndarray, rows: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, 2 + len(VETOES)): per window each alert label's best AudioSet row (what the third voter reads), then each
    veto category's best row. ``rows`` names the AudioSet class of each column of ``scores`` when it holds only some
    of the 521 classes."""
    columns = _EVIDENCE_COLUMNS if rows is None else _evidence_columns(tuple(rows))
    return np.maximum.reduceat(scores[:, columns], _EVIDENCE_STARTS, axis=1)


def audioset_vetoes(evidence: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    """(N,) per row of ``audioset_evidence``: the first ``VETOES`` category AudioSet hears at its threshold or more
    and ``veto_margin`` times more strongly than any cry or scream (index into VETOES), else -1."""
    cry, vetoes = evidence[:, :len(ALERT_LABELS)].max(axis=1), evidence[:, len(ALERT_LABELS):]
    by_name = cfg.veto_thresholds()
    thresholds = np.array([by_name[name] for name in VETOES])
    heard = (thresholds < VETO_OFF) & (vetoes >= thresholds) & (vetoes > cfg.veto_margin * cry[:, None])
    return np.where(heard.any(axis=1), np.argmax(heard, axis=1), -1)


def fuse_batch(yamnet_probs: np.ndarray, wav2vec2_probs: np.ndarray | None, audioset: np.ndarray | None,
               cfg: FusionConfig) -> FusedBatch:
    """``fuse_window`` for every row: (N, 3) YAMNet, (N, 3) Wav2Vec2 or None (a NaN row = absent for that window),
    ``audioset_evidence`` or None. The weights renormalise over the models present in each row (equal weights
    when all present ones weigh 0); ties go to the label listed first, as in ``argmax_label``."""
    yamnet = np.asarray(yamnet_probs, dtype=np.float64)
    count = len(yamnet)
    wav2vec2 = np.full_like(yamnet, np.nan) if wav2vec2_probs is None else np.asarray(wav2vec2_probs, np.float64)
    present = ~np.isnan(wav2vec2[:, 0])
    probs = weighted_average(yamnet, wav2vec2, cfg)
    average = np.argmax(probs, axis=1)
    votes = {VOTER_YAMNET: np.argmax(yamnet, axis=1),
             VOTER_WAV2VEC2: np.where(present, np.argmax(np.where(np.isnan(wav2vec2), -1.0, wav2vec2), axis=1), -1)}
    if audioset is not None:
        votes[VOTER_AUDIOSET] = audioset_votes(np.asarray(audioset, np.float64), cfg.audioset_vote_threshold)
    voter_labels = np.stack(list(votes.values()), axis=1)
    vote_label = majority_labels(voter_labels, average)
    enter = np.array([cfg.enter_threshold_of(label) for label in LABELS])
    summed = cfg.alert_on == ALERT_ON_SUM
    alert_mass = alert_probability(probs)
    if summed:
        candidate = _ALERT_INDEX[np.argmax(probs[:, _ALERT_INDEX], axis=1)]
        score = alert_mass
        agrees = majority_labels(voter_labels, candidate) != LABELS.index(NORMAL_LABEL)
    else:
        candidate, score = average, probs[np.arange(count), average]
        agrees = vote_label == average
    alerting = _IS_ALERT_ROW[candidate] & (score >= enter[candidate]) & ((not cfg.require_vote) | agrees)
    vetoed_by = heard_veto = None
    if audioset is not None:
        heard_veto = audioset_vetoes(np.asarray(audioset, np.float64), cfg)
        vetoed_by = np.where(alerting, heard_veto, -1)
        alerting &= vetoed_by < 0
    alert_score = score if summed else np.where(alerting, score, probs[:, _ALERT_INDEX].max(axis=1))
    return FusedBatch(probs=probs, votes=votes, vote_label=vote_label, alert_label=np.where(alerting, candidate, -1),
                      alert_score=alert_score, average_label=average, alert_mass=alert_mass, summed=summed,
                      vetoed_by=vetoed_by, heard_veto=heard_veto,
                      sustained=sustained_windows(alert_mass, heard_veto, cfg))


def fuse_window(yamnet_probs: np.ndarray, wav2vec2_probs: np.ndarray | None,
                audioset_scores: np.ndarray | None, cfg: FusionConfig) -> FusedWindow:
    """One window: the live path (``fuse_batch`` on one row, after checking each model's scores)."""
    yamnet = as_probabilities(VOTER_YAMNET, yamnet_probs)[None]
    wav2vec2 = None if wav2vec2_probs is None else as_probabilities(VOTER_WAV2VEC2, wav2vec2_probs)[None]
    audioset = None if audioset_scores is None else audioset_evidence(
        as_probabilities(VOTER_AUDIOSET, audioset_scores, YAMNET_AUDIOSET_CLASSES)[None])
    return fuse_batch(yamnet, wav2vec2, audioset, cfg).window(0)

"""The epoch-keeping criteria both branches share (``training.early_stopping``): pure numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.constants import LABELS
from training.early_stopping import STOP_ON, check_stop_on, normal_alert_share, stopping_score, window_macro_f1

CRYING, SCREAMING, NORMAL = (LABELS.index(label) for label in ("Crying", "Screaming", "Normal"))


def score_of(logits: np.ndarray, labels: np.ndarray, active: np.ndarray, stop_on: str) -> float:
    """What a fit keeps its epochs by, from the two figures it reports each epoch."""
    return stopping_score(window_macro_f1(labels, logits.argmax(axis=1)), normal_alert_share(logits, labels, active),
                          stop_on)


def _cries_and_normals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four cry windows (the last a pause: inactive) just over Normal, and four clearly Normal windows."""
    labels = np.array([CRYING] * 4 + [NORMAL] * 4)
    active = np.array([True, True, True, False] + [True] * 4)
    logits = np.zeros((8, len(LABELS)))
    logits[:4] = (0.2, -3.0, 0.0)  # cries, just: alert probability 0.56
    logits[4:] = (0.0, 0.0, 4.0)  # clearly Normal: 0.035
    return logits, labels, active


def test_the_alert_ranking_prefers_the_head_whose_normal_windows_stay_under_the_alerts():
    separated, labels, active = _cries_and_normals()
    tail = separated.copy()
    tail[4] = (1.0, 1.0, 1.1)  # still Normal by argmax, but at 0.64 above every cry: a false alarm at any threshold
    assert score_of(separated, labels, active, "alert_ranking") == 0.0
    assert score_of(tail, labels, active, "alert_ranking") == pytest.approx(-0.25)
    assert normal_alert_share(tail, labels, active) == pytest.approx(0.25)
    # Argmax cannot tell the two apart.
    assert score_of(tail, labels, active, "macro_f1") == score_of(separated, labels, active, "macro_f1")
    # Every window right: F1 1 for Crying and Normal, 0 for Screaming, which has no window here.
    assert score_of(separated, labels, active, "macro_f1") == pytest.approx(2 / 3)


def test_a_pause_inside_a_cry_sets_no_threshold():
    logits, labels, active = _cries_and_normals()
    logits[3] = (-2.0, -3.0, 2.0)  # the inactive cry window scores like the room: 0.02
    # Keeping every alert window, its 0.02 would let all four Normal windows through.
    assert normal_alert_share(logits, labels, active, keeps=(1.0,)) == 0.0
    assert normal_alert_share(logits, labels, np.ones(8, bool), keeps=(1.0,)) == 1.0


def test_screams_count_as_alerts_with_the_cries():
    logits, labels, active = _cries_and_normals()
    labels[0] = SCREAMING
    logits[0] = (-3.0, 0.2, 0.0)  # the same alert probability, on the other alert column
    logits[4] = (-2.0, 0.3, 0.0)  # a Normal window scoring over it: 0.57 of Screaming
    assert normal_alert_share(logits, labels, active, keeps=(1.0,)) == 0.25


def test_window_macro_f1_counts_each_label_alike():
    labels = np.array([CRYING, CRYING, SCREAMING, NORMAL])
    assert window_macro_f1(labels, labels) == 1.0
    # One cry called Normal: Crying F1 2/3, Screaming 1, Normal 2/3.
    assert window_macro_f1(labels, np.array([CRYING, NORMAL, SCREAMING, NORMAL])) == pytest.approx(7 / 9)


def test_an_unknown_criterion_is_refused_with_its_owner_and_the_choices():
    for stop_on in STOP_ON:
        check_stop_on(stop_on, "Settings")
    with pytest.raises(ValueError, match=r"Settings\.stop_on must be one of .*'accuracy'"):
        check_stop_on("accuracy", "Settings")
    with pytest.raises(ValueError, match="stop_on"):
        stopping_score(0.9, 0.1, "accuracy")

"""Which epoch a fit keeps: the criteria both branches judge their val epochs by.

An alarm fires on the far tail of the alert probability, so ``alert_ranking`` keeps the epoch where the fewest val
Normal windows reach the thresholds that keep most of the val cries and screams; ``macro_f1`` keeps the epoch of
best val window macro-F1 of the argmax, a figure that tail does not move (the README has both measured).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitor.constants import ALERT_LABELS, LABELS
from monitor.signal_helpers import softmax

from .metrics import index_report, normal_alert_shares

STOP_ON = ("alert_ranking", "macro_f1")
"""The criteria: ``HeadConfig.stop_on`` and ``TrainSettings.stop_on``."""
RANKING_KEEPS = (0.8, 0.9, 0.95)
"""Shares of the val alert windows whose thresholds ``alert_ranking`` looks at."""
ALERT_COLUMNS = [LABELS.index(label) for label in ALERT_LABELS]
NORMAL_COLUMN = LABELS.index("Normal")


def check_stop_on(stop_on: str, owner: str) -> None:
    """Raise on an unknown criterion: called where settings are made, so a typo fails before minutes of work."""
    if stop_on not in STOP_ON:
        raise ValueError(f"{owner}.stop_on must be one of {STOP_ON}, got {stop_on!r}")


def window_macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the three labels, from label indices."""
    return index_report(labels, predicted, LABELS)["macro_f1"]


def normal_alert_share(logits: np.ndarray, labels: np.ndarray, active: np.ndarray,
                       keeps: Sequence[float] = RANKING_KEEPS) -> float:
    """Mean over ``keeps`` of ``normal_alert_shares`` on the summed cry + scream probability (lower is better);
    ``active``: the alert windows that carry their clip's label, so a pause inside a cry sets no threshold."""
    alert = softmax(logits)[:, ALERT_COLUMNS].sum(axis=1)
    normal = np.asarray(labels) == NORMAL_COLUMN
    return float(np.mean(normal_alert_shares(alert, ~normal & np.asarray(active, bool), normal, keeps)))


def stopping_score(macro_f1: float, alert_share: float, stop_on: str) -> float:
    """Higher is better: minus ``normal_alert_share`` (``alert_ranking``) or the window macro-F1 (``macro_f1``); from
    the two figures each epoch reports anyway, so neither is computed twice."""
    check_stop_on(stop_on, "stopping_score")
    return macro_f1 if stop_on == "macro_f1" else -alert_share

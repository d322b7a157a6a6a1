"""Classification metrics in plain numpy: confusion matrix, per-class report, one-vs-rest ROC curves.

Kept free of scikit-learn so the evaluation report has no optional dependency and no warning spam:
an undefined ratio (no predictions or no examples of a class) is reported as 0, and an undefined
AUC (a class absent from the data) as ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _indices(values: Sequence[str], labels: Sequence[str], what: str) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    unknown = sorted({v for v in values if v not in position})
    if unknown:
        raise ValueError(f"{what} contains labels {unknown} outside {list(labels)}")
    return np.array([position[v] for v in values], dtype=np.int64)


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts (K, K): row = true label, column = predicted label, both in ``labels`` order."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items, y_pred {len(y_pred)}")
    true_idx = _indices(y_true, labels, "y_true")
    pred_idx = _indices(y_pred, labels, "y_pred")
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(cm, (true_idx, pred_idx), 1)
    return cm


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division with 0 where the denominator is 0 (no runtime warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _rates(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy, per-class precision, recall, F1) of one confusion matrix (K, K) or a stack of them
    (..., K, K), with 0 for every undefined ratio."""
    true_positives = np.diagonal(cms, axis1=-2, axis2=-1).astype(np.float64)
    precision = _ratio(true_positives, cms.sum(axis=-2))
    recall = _ratio(true_positives, cms.sum(axis=-1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    accuracy = _ratio(true_positives.sum(axis=-1), cms.sum(axis=(-2, -1)))
    return accuracy, precision, recall, f1


def classification_report(cm: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro precision / recall / F1 and per-class figures from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(labels)} labels")
    accuracy, precision, recall, f1 = _rates(cm)
    support = cm.sum(axis=1)
    return {
        "accuracy": float(accuracy),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def index_report(true_idx: Sequence[int], pred_idx: Sequence[int], labels: Sequence[str]) -> dict:
    """``classification_report`` of labels given as indices into ``labels``, as argmax gives them."""
    names = list(labels)
    return classification_report(confusion_matrix([names[i] for i in true_idx], [names[i] for i in pred_idx], names),
                                 names)


def binary_roc(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for ``score >= threshold`` decisions, one point per distinct score.

    The first point is (0, 0) at threshold +inf; tied scores move together, so the curve never
    depends on the order of equal-score examples.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_positive = positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1] if scores.size else []
    tps = np.cumsum(sorted_positive)[last_of_tie]
    fps = np.cumsum(~sorted_positive)[last_of_tie]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    tpr = np.r_[0.0, _ratio(tps, np.full(len(tps), n_pos))]
    fpr = np.r_[0.0, _ratio(fps, np.full(len(fps), n_neg))]
    thresholds = np.r_[np.inf, sorted_scores[last_of_tie]]
    return fpr, tpr, thresholds


def area_under_curve(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under a curve whose x never decreases."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def roc_curves(y_true: Sequence[str], scores: np.ndarray, labels: Sequence[str]) -> dict[str, dict]:
    """One-vs-rest ROC per label: ``{label: {fpr, tpr, thresholds, auc}}`` (lists, JSON-ready).

    ``scores[:, k]`` is the score of ``labels[k]``. AUC is ``None`` when the data hold no positive or
    no negative example of a label, since the curve is then undefined.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(y_true), len(labels)):
        raise ValueError(f"scores shape {scores.shape} does not match ({len(y_true)}, {len(labels)})")
    true_idx = _indices(y_true, labels, "y_true")
    curves = {}
    for k, label in enumerate(labels):
        positive = true_idx == k
        fpr, tpr, thresholds = binary_roc(positive, scores[:, k])
        defined = 0 < positive.sum() < positive.size
        curves[label] = {
            "fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "thresholds": [None if not np.isfinite(t) else float(t) for t in thresholds],
            "auc": area_under_curve(fpr, tpr) if defined else None,
        }
    return curves


def grouped_accuracy(y_true: Sequence[str], y_pred: Sequence[str], keys: Sequence[str]) -> dict[str, dict]:
    """``{key: {clips, accuracy}}``: accuracy within each group of examples sharing a key (e.g. source)."""
    if not len(y_true) == len(y_pred) == len(keys):
        raise ValueError("y_true, y_pred and keys must have the same length")
    out: dict[str, dict] = {}
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        correct = sum(y_true[i] == y_pred[i] for i in members)
        out[key] = {"clips": len(members), "accuracy": correct / len(members)}
    return out


def _accuracy_and_macro_f1(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 over the labels each matrix holds, as true or predicted label: a bootstrap draw without a scream
    says nothing about screams, and counting its F1 as 0 would drag every such draw down."""
    accuracy, _, _, f1 = _rates(cms)
    present = (cms.sum(axis=-1) + cms.sum(axis=-2)) > 0
    return accuracy, _ratio((f1 * present).sum(axis=-1), present.sum(axis=-1))


def _group_resampled(y_true: Sequence[str], predictions: Sequence[Sequence[str]], labels: Sequence[str],
                     groups: Sequence[str] | None, resamples: int, seed: int) -> tuple[list, list, int]:
    """Per prediction set, (accuracy, macro-F1) observed and on each of ``resamples`` draws of whole groups with
    replacement (every set scored on the same draws); and the number of groups."""
    groups = list(groups) if groups is not None else [str(i) for i in range(len(y_true))]
    if any(len(pred) != len(y_true) for pred in predictions) or len(groups) != len(y_true):
        raise ValueError("y_true, every prediction list and groups must have the same length")
    names = sorted(set(groups))
    where = {name: i for i, name in enumerate(names)}
    k = len(labels)
    per_group = np.zeros((len(predictions), len(names), k, k), dtype=np.int64)
    true_idx = _indices(y_true, labels, "y_true")
    for side, pred in enumerate(predictions):
        pred_idx = _indices(pred, labels, "predictions")
        np.add.at(per_group[side], ([where[g] for g in groups], true_idx, pred_idx), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    counts = np.zeros((resamples, len(names)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(resamples), len(names)), draws.ravel()), 1)
    observed = [_accuracy_and_macro_f1(side.sum(axis=0, keepdims=True)) for side in per_group]
    sampled = [_accuracy_and_macro_f1(np.tensordot(counts, side, axes=1)) for side in per_group]
    return observed, sampled, len(names)


def paired_bootstrap(y_true: Sequence[str], pred_a: Sequence[str], pred_b: Sequence[str], labels: Sequence[str],
                     groups: Sequence[str] | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """How much better A is than B (accuracy, macro-F1), with a 95% interval from resampling groups.

    Clips of one recording or source group err together (two takes of the same cat), so the groups,
    not the clips, are drawn with replacement; both models are scored on the same draw. An interval
    that contains 0 means the difference is within what the test set can tell apart.
    """
    observed, sampled, count = _group_resampled(y_true, (pred_a, pred_b), labels, groups, resamples, seed)
    out = {"resamples": resamples, "groups": count}
    for i, metric in enumerate(("accuracy", "macro_f1")):
        difference = sampled[0][i] - sampled[1][i]
        lo, hi = np.percentile(difference, [2.5, 97.5])
        out[metric] = {"difference": float(observed[0][i][0] - observed[1][i][0]), "ci95": [float(lo), float(hi)]}
    return out


def grouped_bootstrap(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                      groups: Sequence[str] | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy and macro-F1 with a 95% interval from resampling whole groups (see ``paired_bootstrap``): how far
    a figure on a few dozen recordings can be trusted."""
    observed, sampled, count = _group_resampled(y_true, (y_pred,), labels, groups, resamples, seed)
    out = {"resamples": resamples, "groups": count}
    for i, metric in enumerate(("accuracy", "macro_f1")):
        lo, hi = np.percentile(sampled[0][i], [2.5, 97.5])
        out[metric] = {"value": float(observed[0][i][0]), "ci95": [float(lo), float(hi)]}
    return out


def normal_alert_shares(alert: np.ndarray, is_alert: np.ndarray, is_normal: np.ndarray,
                        keeps: Sequence[float]) -> list[float]:
    """Per share in ``keeps``: the share of Normal windows scoring at least the threshold that keeps that share of
    the alert windows. An alarm fires on the far tail of the alert probability, so this, not argmax accuracy, says
    how often a head at a high threshold would wake someone for nothing; 0 when there are no windows to judge."""
    alert = np.asarray(alert, dtype=np.float64)
    positives, negatives = alert[np.asarray(is_alert, bool)], alert[np.asarray(is_normal, bool)]
    if not positives.size or not negatives.size:
        return [0.0 for _ in keeps]
    return [float(np.mean(negatives >= np.quantile(positives, 1.0 - keep))) for keep in keeps]

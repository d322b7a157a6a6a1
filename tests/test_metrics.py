"""training.metrics against figures worked out by hand and against the rank definition of AUC."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from training.metrics import (
    binary_roc,
    classification_report,
    confusion_matrix,
    grouped_accuracy,
    grouped_bootstrap,
    index_report,
    normal_alert_shares,
    paired_bootstrap,
    roc_curves,
)

LABELS = ("A", "B", "C")


def _pairs_from(cm: list[list[int]]) -> tuple[list[str], list[str]]:
    y_true, y_pred = [], []
    for i, row in enumerate(cm):
        for j, count in enumerate(row):
            y_true += [LABELS[i]] * count
            y_pred += [LABELS[j]] * count
    return y_true, y_pred


HAND_CM = [[5, 1, 0],
           [2, 3, 1],
           [0, 0, 4]]


def test_confusion_matrix_counts_rows_true_columns_predicted():
    y_true, y_pred = _pairs_from(HAND_CM)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y_true))
    cm = confusion_matrix([y_true[i] for i in order], [y_pred[i] for i in order], LABELS)
    assert cm.tolist() == HAND_CM


def test_report_matches_hand_computed_figures():
    report = classification_report(np.array(HAND_CM), LABELS)
    # By hand: column sums 7, 4, 5; row sums 6, 6, 4; diagonal 5, 3, 4 of 16.
    precision = {"A": 5 / 7, "B": 3 / 4, "C": 4 / 5}
    recall = {"A": 5 / 6, "B": 3 / 6, "C": 4 / 4}
    f1 = {"A": 10 / 13, "B": 0.6, "C": 8 / 9}
    assert report["accuracy"] == pytest.approx(12 / 16)
    for label in LABELS:
        assert report["per_class"][label]["precision"] == pytest.approx(precision[label])
        assert report["per_class"][label]["recall"] == pytest.approx(recall[label])
        assert report["per_class"][label]["f1"] == pytest.approx(f1[label])
    assert [report["per_class"][x]["support"] for x in LABELS] == [6, 6, 4]
    assert report["macro_precision"] == pytest.approx((5 / 7 + 3 / 4 + 4 / 5) / 3)
    assert report["macro_recall"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert report["macro_f1"] == pytest.approx((10 / 13 + 0.6 + 8 / 9) / 3)


def test_undefined_ratios_are_zero_without_warnings():
    cm = np.array([[3, 0, 0], [1, 0, 0], [0, 0, 0]])  # B never predicted, C never present
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report(cm, LABELS)
    assert report["per_class"]["B"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_class"]["C"]["support"] == 0
    assert report["per_class"]["A"]["precision"] == pytest.approx(3 / 4)
    assert report["accuracy"] == pytest.approx(3 / 4)


def test_unknown_label_and_shape_mismatch_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(["A", "D"], ["A", "A"], LABELS)
    with pytest.raises(ValueError, match="shape"):
        classification_report(np.zeros((2, 2)), LABELS)


def _rank_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def test_roc_perfectly_separable_gives_auc_one():
    y_true = ["A"] * 4 + ["B"] * 3 + ["C"] * 3
    scores = np.full((10, 3), 0.1)
    for i, label in enumerate(y_true):
        scores[i, LABELS.index(label)] = 0.8
    curves = roc_curves(y_true, scores, LABELS)
    for label in LABELS:
        assert curves[label]["auc"] == pytest.approx(1.0)
        assert curves[label]["fpr"][0] == 0.0 and curves[label]["tpr"][-1] == 1.0


def test_roc_reversed_scores_give_auc_zero():
    positive = np.array([True, True, False, False])
    fpr, tpr, _ = binary_roc(positive, np.array([0.1, 0.2, 0.8, 0.9]))
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.0)


def test_roc_random_scores_match_rank_definition_and_are_near_half():
    rng = np.random.default_rng(7)
    n = 600
    y_true = list(rng.choice(LABELS, size=n))
    scores = rng.random((n, 3)).round(2)  # rounding creates many ties
    curves = roc_curves(y_true, scores, LABELS)
    true_idx = np.array([LABELS.index(y) for y in y_true])
    for k, label in enumerate(LABELS):
        expected = _rank_auc(true_idx == k, scores[:, k])
        assert curves[label]["auc"] == pytest.approx(expected, abs=1e-12)
        assert abs(curves[label]["auc"] - 0.5) < 0.08
        assert np.all(np.diff(curves[label]["fpr"]) >= 0) and np.all(np.diff(curves[label]["tpr"]) >= 0)


def test_roc_auc_is_none_for_a_label_absent_from_the_data():
    curves = roc_curves(["A", "B"], np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]), LABELS)
    assert curves["C"]["auc"] is None
    assert curves["A"]["auc"] == pytest.approx(1.0)


def test_grouped_accuracy_per_key():
    out = grouped_accuracy(["A", "A", "B", "B"], ["A", "B", "B", "B"], ["s1", "s1", "s2", "s2"])
    assert out == {"s1": {"clips": 2, "accuracy": 0.5}, "s2": {"clips": 2, "accuracy": 1.0}}


def test_paired_bootstrap_resamples_whole_groups_and_brackets_the_observed_difference():
    labels = ["a", "b"]
    y_true = ["a"] * 6 + ["b"] * 6
    perfect = list(y_true)
    # B's only mistakes are both clips of group g0: drawn together or not at all
    flawed = ["b", "b"] + y_true[2:]
    groups = ["g0", "g0", "g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4", "g5", "g5"]
    result = paired_bootstrap(y_true, perfect, flawed, labels, groups, resamples=400, seed=1)
    assert result["groups"] == 6
    assert result["accuracy"]["difference"] == pytest.approx(2 / 12)
    lo, hi = result["accuracy"]["ci95"]
    assert lo == pytest.approx(0.0) and 2 / 12 <= hi <= 1.0
    same = paired_bootstrap(y_true, perfect, perfect, labels, groups, resamples=50)
    assert same["macro_f1"] == {"difference": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError):
        paired_bootstrap(y_true, perfect, flawed[:-1], labels, groups)


def test_grouped_bootstrap_brackets_the_figure_and_draws_whole_groups():
    labels = ["a", "b"]
    y_true = ["a"] * 6 + ["b"] * 6
    groups = ["g0", "g0", "g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4", "g5", "g5"]
    perfect = grouped_bootstrap(y_true, y_true, labels, groups, resamples=50)
    assert perfect["macro_f1"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    flawed = ["b", "b"] + y_true[2:]  # both mistakes in group g0
    result = grouped_bootstrap(y_true, flawed, labels, groups, resamples=400, seed=1)
    report = classification_report(confusion_matrix(y_true, flawed, labels), labels)
    assert result["groups"] == 6
    assert result["macro_f1"]["value"] == pytest.approx(report["macro_f1"])
    lo, hi = result["accuracy"]["ci95"]
    assert lo < 10 / 12 < hi == pytest.approx(1.0), "some draws miss g0 altogether"
    by_clip = grouped_bootstrap(y_true, flawed, labels, None, resamples=400, seed=1)
    assert by_clip["groups"] == 12
    assert lo <= by_clip["accuracy"]["ci95"][0], "mistakes drawn together spread the figure at least as wide"
    with pytest.raises(ValueError):
        grouped_bootstrap(y_true, flawed[:-1], labels, groups)


def test_normal_alert_shares_count_normal_windows_at_the_threshold_keeping_each_share_of_alerts():
    alerts = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    normals = np.array([0.92, 0.75, 0.65, 0.56, 0.05])
    scores = np.concatenate([alerts, normals])
    is_alert = np.r_[np.ones(alerts.size, bool), np.zeros(normals.size, bool)]
    # Keeping 20% of the alerts puts the threshold at 0.82 (numpy's linear quantile), 50% at 0.55 and all of
    # them at 0.1: one, four and four of the five Normal windows reach them.
    shares = normal_alert_shares(scores, is_alert, ~is_alert, (0.2, 0.5, 1.0))
    assert shares == pytest.approx([0.2, 0.8, 0.8])
    inactive = is_alert.copy()
    inactive[:2] = False  # windows neither alert nor Normal (a cry's pauses) count for neither side: 0.66 now
    assert normal_alert_shares(scores, inactive, ~is_alert, (0.2,))[0] == pytest.approx(0.4)


def test_normal_alert_shares_are_zero_without_windows_to_judge():
    assert normal_alert_shares(np.array([0.5, 0.6]), np.array([True, True]), np.array([False, False]),
                               (0.8, 0.9)) == [0.0, 0.0]


def test_index_report_reads_argmax_indices_as_the_labels_they_point_to():
    true_idx, pred_idx = [0, 0, 1, 2, 2], [0, 2, 1, 2, 1]
    by_name = classification_report(confusion_matrix([LABELS[i] for i in true_idx], [LABELS[i] for i in pred_idx],
                                                     LABELS), LABELS)
    assert index_report(np.array(true_idx), np.array(pred_idx), LABELS) == by_name
    assert by_name["accuracy"] == pytest.approx(3 / 5)

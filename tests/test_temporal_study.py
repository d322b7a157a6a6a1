"""The learned-event-stage study: folds that keep recordings together, and context features that stay in a clip."""

from __future__ import annotations

import numpy as np

from training.temporal_study import context_features, false_alerts, group_folds


def test_every_group_lands_in_one_fold_and_every_stratum_is_spread():
    groups = np.array([f"g{i // 3}" for i in range(60)])  # 20 groups of 3 clips
    strata = np.array(["cry" if int(g[1:]) < 10 else "normal" for g in groups])
    folds = group_folds(groups, strata, 5, seed=0)
    assert set(folds) == set(groups.tolist())
    for stratum in ("cry", "normal"):
        members = {folds[g] for g, s in zip(groups, strata, strict=True) if s == stratum}
        assert members == set(range(5)), "10 groups of a stratum over 5 folds: two in each"


def test_context_features_have_the_window_and_its_clip_context():
    features = np.array([[1.0], [3.0], [5.0], [10.0], [20.0]])
    clip = np.array([0, 0, 0, 1, 1])
    out = context_features(features, 2, clip)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out[:, 0], features[:, 0])
    np.testing.assert_allclose(out[:, 1], [1, 2, 4, 10, 15]), "the first window of a clip is not mixed with the last"
    np.testing.assert_allclose(out[:, 2], [1, 3, 5, 10, 20])


def test_false_alerts_are_counted_at_the_cry_recall():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 4)
    alert = np.array([0.9] * 9 + [0.1] + [0.95, 0.2] + [0.95, 0.5, 0.1, 0.1])
    sources = np.array(["cry"] * 12 + ["cat", "tv", "tv", "tv"])
    out = false_alerts(alert, labels, sources)["cry_recall_0.9"]
    assert out["normal_windows_alerting"] == 0.25
    assert out["scream_recall"] == 0.5
    assert out["by_source"] == {"cat": 1}

"""Does a learned event stage beat plain smoothing over time? A cross-fitted study on the train and val clips.

The question (issue 11, item 4): a small model over the last 2-3 s of per-window outputs against simple rules.
Its answer must not come from windows the head was trained on, so the YAMNet head is refitted K times on the
cached features (grouped folds over train + val: no recording in two folds), each fold scored by the head that
never saw it. Over those out-of-fold scores, per window:
- ``raw``: the head's alert probability (Crying + Screaming) of the window alone;
- ``mean N``: its trailing mean over N windows (``monitor.smoothing.trailing_mean``, what the runtime does);
- ``learned N``: a logistic model over the window's log-probabilities and their mean and max over the last N
  windows (optionally with the 521 log AudioSet scores), fitted and scored with the same folds.
Reported: the share of Normal windows that alert when the threshold keeps 90% / 95% of the cry windows, with
scream recall there, and the sources of those false alerts. Test clips are never read.

    python -m training.temporal_study [--folds 5]      # ~10 min on 2 cores; JSON to build/reports/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from monitor.command import setup_logging
from monitor.config import Config
from monitor.constants import LABELS
from monitor.paths import build_dir
from monitor.smoothing import lagged_rows, trailing_mean

from .split import DEFAULT_SPLIT_SEED, dataset_split
from .train_yamnet import AUGMENTED, HeadConfig, _fit, build_features, head_inputs

log = logging.getLogger(__name__)

CONTEXTS = (2, 3, 4, 6)
"""Windows of context compared (at the default 0.5 s hop: 1 to 3 s)."""
CRY_RECALLS = (0.9, 0.95)
LOGISTIC_C = 0.05
SELECTION_STRIDE = 20
"""The fold heads train a fixed number of epochs; this thin slice of their own rows only feeds ``_fit``'s
bookkeeping, so no held-out window steers them."""
CRYING, SCREAMING, NORMAL = (LABELS.index(label) for label in ("Crying", "Screaming", "Normal"))


def group_folds(groups: np.ndarray, strata: np.ndarray, folds: int, seed: int) -> dict[str, int]:
    """Fold per group: the groups of each stratum (label, source) dealt round-robin after a seeded shuffle, so
    every fold holds some of every stratum that has enough groups."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = {}
    for group, stratum in sorted(set(zip(groups.tolist(), strata.tolist(), strict=True))):
        by_stratum.setdefault(stratum, []).append(group)
    fold_of, offset = {}, 0
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        rng.shuffle(members)
        for i, group in enumerate(members):
            fold_of.setdefault(group, (i + offset) % folds)
        offset += len(members)
    return fold_of


def context_features(features: np.ndarray, windows: int, segment: np.ndarray) -> np.ndarray:
    """Per window: its features, and their mean and max over the last ``windows`` windows of its clip (where the
    clip is shorter, the window itself fills the context)."""
    stack = np.stack([lagged for lagged, _ in lagged_rows(features, windows, segment)])
    return np.concatenate([features, stack.mean(axis=0), stack.max(axis=0)], axis=1)


def false_alerts(alert: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> dict:
    """At the thresholds keeping ``CRY_RECALLS`` of the cry windows: Normal windows alerting, scream recall."""
    out = {}
    for recall in CRY_RECALLS:
        threshold = np.quantile(alert[labels == CRYING], 1.0 - recall)
        alerting = alert >= threshold
        normal = labels == NORMAL
        out[f"cry_recall_{recall:g}"] = {
            "normal_windows_alerting": round(float(alerting[normal].mean()), 4),
            "scream_recall": round(float(alerting[labels == SCREAMING].mean()), 4),
            "by_source": dict(Counter(sources[normal & alerting].tolist()).most_common(6)),
        }
    return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def learned_alert(features: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold alert probability of a class-balanced logistic model over ``features``."""
    from sklearn.linear_model import LogisticRegression

    alert = np.zeros(len(labels))
    for k in np.unique(fold):
        train, held = fold != k, fold == k
        mean, scale = features[train].mean(axis=0), features[train].std(axis=0) + 1e-3
        model = LogisticRegression(C=LOGISTIC_C, max_iter=300, class_weight="balanced")
        model.fit((features[train] - mean) / scale, labels[train])
        alert[held] = 1.0 - model.predict_proba((features[held] - mean) / scale)[:, NORMAL]
    return alert


def run_study(manifest: Path, folds: int = 5, seed: int = DEFAULT_SPLIT_SEED) -> dict:
    cfg, head_cfg = Config(), HeadConfig()
    data = dataset_split(manifest, seed)
    clips = data.clips
    features, _ = build_features(clips, data.split, cfg, head_cfg, seed)
    groups = np.array([c.group for c in clips])
    fold_of = group_folds(groups, np.array([f"{c.label}/{c.source}" for c in clips]), folds, seed)
    window_fold = np.array([fold_of[g] for g in groups])[features.clip_index]
    clean = np.isin(features.part, ("train", "val")) & features.active
    pool = clean | (features.part == AUGMENTED)
    inputs = head_inputs(features.embeddings, features.scores, head_cfg.audioset_inputs)
    fixed = dataclasses.replace(head_cfg, patience=head_cfg.max_epochs + 1)
    out_of_fold = np.zeros((len(inputs), len(LABELS)), np.float32)
    for k in range(folds):
        train = pool & (window_fold != k)
        held = clean & (window_fold == k)
        check = np.flatnonzero(train)[::SELECTION_STRIDE]
        weights, _, _ = _fit(inputs[train], features.labels[train], np.ones(int(train.sum())), inputs[check],
                             features.labels[check], fixed, seed)
        out_of_fold[held] = weights.logits(features.embeddings[held], features.scores[held])
        log.info("fold %d of %d: %d held-out windows scored", k + 1, folds, int(held.sum()))
    rows = np.flatnonzero(clean)
    labels, clip = features.labels[rows], features.clip_index[rows]
    sources = np.array([c.source for c in clips])[clip]
    log_probs = _log_softmax(out_of_fold[rows])
    raw_alert = 1.0 - np.exp(log_probs[:, NORMAL])
    fold = window_fold[rows]
    results = {"raw": false_alerts(raw_alert, labels, sources)}
    for n in CONTEXTS:
        results[f"mean {n}"] = false_alerts(trailing_mean(raw_alert[:, None], n, clip)[:, 0], labels, sources)
        results[f"learned {n}"] = false_alerts(
            learned_alert(context_features(log_probs, n, clip), labels, fold), labels, sources)
    audioset = np.log(features.scores[rows] + 1e-4)
    results["learned 4 + AudioSet"] = false_alerts(learned_alert(
        context_features(np.concatenate([log_probs, audioset], axis=1), 4, clip), labels, fold), labels, sources)
    return {"folds": folds, "windows": int(len(rows)), "splits": ["train", "val"], "results": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("../shared/data/manifest.csv"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging("INFO")
    report = run_study(args.manifest, args.folds)
    out = args.out or build_dir() / "reports" / "temporal_study.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

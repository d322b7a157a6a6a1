"""Clip-level evaluation of the built models: metrics.json, ROC curves, PNG figures, report.md, errors.csv.

Every clip goes through ``monitor.classify.classify_clip``, the very function behind
``nursery-monitor classify``, so the figures describe what a user gets, not a training-time shortcut.
Accuracy is also broken down per source and per stored sample rate: on the shared data all cries are
8 kHz phone recordings, and a model that learnt "narrow band = cry" shows up there.

    python -m training.evaluate [--manifest CSV|DIR] [--split test|val|train|all] [--out DIR]
                                [--config config.yaml] [--models models/manifest.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from monitor.audiofile import AudioFileError, file_info
from monitor.classify import CLIP_DECISIONS, DEFAULT_FUSION, Classifiers, ClipResult, classify_clip, load_classifiers
from monitor.command import EXIT_CONFIG, EXIT_OK, add_config_option, fail, load_command_config, setup_logging
from monitor.config import Config, FusionConfig
from monitor.constants import LABELS
from monitor.fusion import MODEL_NAMES, VOTER_WAV2VEC2, VOTER_YAMNET, argmax_label, average_probabilities
from monitor.model_manifest import ModelError
from monitor.paths import build_dir, default_manifest_csv
from monitor.progress import progress_bar

from .calibration import expected_calibration_error
from .data import Clip, load_dataset, manifest_sha256
from .metrics import (
    classification_report,
    confusion_matrix,
    grouped_accuracy,
    grouped_bootstrap,
    paired_bootstrap,
    roc_curves,
)
from .split import DEFAULT_SPLIT_SEED, SPLITS, dataset_split

log = logging.getLogger(__name__)

MODEL_KEYS = CLIP_DECISIONS
"""Top-level sections of metrics.json, in report order (``ClipResult.per_model`` keys)."""
DECISION_MODEL = DEFAULT_FUSION
"""The score behind ``ClipResult.label``: what ``nursery-monitor classify`` prints."""
ALL_CLIPS = "all"
DEFAULT_SPLIT = "test"
METRIC_DIGITS = 6
SWEEP_STEPS = 10
"""YAMNet weights 0, 0.1, ..., 1 in the fusion-weight sweep."""


def default_eval_dir() -> Path:
    return build_dir() / "reports" / "eval"


@dataclass(frozen=True)
class ClipOutcome:
    clip: Clip
    sample_rate: int | None
    result: ClipResult

    def predicted(self, model: str) -> str:
        return self.result.per_model_labels[model]

    def scores(self, model: str) -> list[float]:
        probs = self.result.per_model[model]
        return [probs[label] for label in LABELS]


@dataclass(frozen=True)
class SkippedClip:
    clip: Clip
    reason: str


@dataclass(frozen=True)
class Selection:
    """The clips to evaluate and where they came from."""

    clips: list[Clip]
    manifest: Path
    manifest_sha256: str
    split: str
    split_file: Path | None


def select_clips(manifest: Path | None, split: str | None, seed: int = DEFAULT_SPLIT_SEED) -> Selection:
    """The shared data's test split by default; all clips of any other manifest unless a split is named."""
    source = Path(manifest) if manifest is not None else default_manifest_csv()
    chosen = split or (DEFAULT_SPLIT if manifest is None else ALL_CLIPS)
    if chosen == ALL_CLIPS:
        return Selection(load_dataset(source), source, manifest_sha256(source), chosen, None)
    data = dataset_split(source, seed)
    if not data.split[chosen]:
        raise ValueError(f"{source}: split '{chosen}' of {data.split_file} is empty")
    return Selection(data.split[chosen], source, data.manifest_sha256, chosen, data.split_file)


def _stored_rate(clip: Clip) -> int | None:
    if clip.sample_rate is not None:
        return clip.sample_rate
    try:
        return file_info(clip.path)[0]
    except AudioFileError:
        return None


def classify_clips(clips: Sequence[Clip], classifiers: Classifiers,
                   cfg: Config) -> tuple[list[ClipOutcome], list[SkippedClip]]:
    """Each clip through ``classify_clip``; an undecodable file is logged and listed, never silently lost."""
    outcomes, skipped = [], []
    for clip in progress_bar(clips, desc="evaluate", unit="clip"):
        try:
            result = classify_clip(clip.path, classifiers, cfg)
        except AudioFileError as exc:
            log.warning("skipping %s", exc)
            skipped.append(SkippedClip(clip, exc.reason))
            continue
        outcomes.append(ClipOutcome(clip, _stored_rate(clip), result))
    return outcomes, skipped


def evaluated_models(outcomes: Sequence[ClipOutcome]) -> list[str]:
    """The sections every clip has (no wav2vec2 when it is switched off)."""
    return [m for m in MODEL_KEYS if all(m in o.result.per_model_labels for o in outcomes)]


def _rounded(value):
    if isinstance(value, float):
        return round(value, METRIC_DIGITS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def model_metrics(outcomes: Sequence[ClipOutcome], model: str) -> tuple[dict, dict]:
    """(the model's section of metrics.json, its full ROC curves)."""
    y_true = [o.clip.label for o in outcomes]
    y_pred = [o.predicted(model) for o in outcomes]
    cm = confusion_matrix(y_true, y_pred, LABELS)
    scores = np.array([o.scores(model) for o in outcomes])
    curves = roc_curves(y_true, scores, LABELS)
    section = _rounded(classification_report(cm, LABELS))
    section["ece"] = round(expected_calibration_error(scores, np.array([LABELS.index(y) for y in y_true])),
                           METRIC_DIGITS)
    section["confusion_matrix"] = cm.tolist()
    interval = grouped_bootstrap(y_true, y_pred, LABELS, [o.clip.group for o in outcomes])
    section["ci95"] = {metric: _rounded(interval[metric]["ci95"]) for metric in ("accuracy", "macro_f1")}
    section["roc"] = {label: {"auc": _rounded(curve["auc"])} for label, curve in curves.items()}
    return section, curves


def weight_sweep(outcomes: Sequence[ClipOutcome], fusion: FusionConfig, steps: int = SWEEP_STEPS) -> list[dict]:
    """Accuracy and macro-F1 of the averaged ensemble for YAMNet weights 0..1 (Wav2Vec2 gets the rest).

    A clip's ensemble score is the fusion average of the two models' clip scores, so every weight is
    re-fused from them, with the runtime's own averaging: no re-classification. Run it on val to choose
    ``fusion.weight_yamnet``; on test it only shows how much the choice matters.
    """
    if not all(VOTER_WAV2VEC2 in o.result.per_model for o in outcomes):
        return []
    y_true = [o.clip.label for o in outcomes]
    rows = []
    for step in range(steps + 1):
        weight = step / steps
        weighted = dataclasses.replace(fusion, weight_yamnet=weight, weight_wav2vec2=1.0 - weight)
        y_pred = [argmax_label(average_probabilities(np.array(o.scores(VOTER_YAMNET)),
                                                     np.array(o.scores(VOTER_WAV2VEC2)), weighted))
                  for o in outcomes]
        report = classification_report(confusion_matrix(y_true, y_pred, LABELS), LABELS)
        rows.append({"weight_yamnet": round(weight, 3), "accuracy": round(report["accuracy"], METRIC_DIGITS),
                     "macro_f1": round(report["macro_f1"], METRIC_DIGITS)})
    return rows


def single_models_vs_ensemble(outcomes: Sequence[ClipOutcome], models: Sequence[str]) -> dict[str, dict]:
    """Each branch minus the decision ensemble (accuracy, macro-F1) with a 95% interval over clip groups:
    whether a branch alone beats the ensemble by more than the test set's noise."""
    if DECISION_MODEL not in models:
        return {}
    y_true = [o.clip.label for o in outcomes]
    groups = [o.clip.group for o in outcomes]
    ensemble = [o.predicted(DECISION_MODEL) for o in outcomes]
    return {model: _rounded(paired_bootstrap(y_true, [o.predicted(model) for o in outcomes], ensemble, LABELS,
                                             groups))
            for model in models if model in MODEL_NAMES}


def _numbers_first(key: str) -> tuple:
    """Sample rates in numeric order (8000 before 16000), other keys alphabetically after them."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def breakdown(outcomes: Sequence[ClipOutcome], models: Sequence[str], key_of) -> dict[str, dict]:
    """Per key (source, sample rate): clips, true-label counts, each model's accuracy, what the decision said."""
    keys = [str(key_of(o)) for o in outcomes]
    y_true = [o.clip.label for o in outcomes]
    table: dict[str, dict] = {}
    for key in sorted(set(keys), key=_numbers_first):
        members = [o for o, k in zip(outcomes, keys, strict=True) if k == key]
        table[key] = {"clips": len(members), "labels": dict(Counter(o.clip.label for o in members)),
                      "predicted": dict(Counter(o.predicted(DECISION_MODEL) for o in members)
                                        if DECISION_MODEL in models else {}),
                      "accuracy": {}}
    for model in models:
        per_key = grouped_accuracy(y_true, [o.predicted(model) for o in outcomes], keys)
        for key, figures in per_key.items():
            table[key]["accuracy"][model] = round(figures["accuracy"], METRIC_DIGITS)
    return table


def compute_metrics(outcomes: Sequence[ClipOutcome]) -> tuple[dict, dict[str, dict]]:
    """(metrics.json body without ``meta``, ROC curves per model)."""
    if not outcomes:
        raise ValueError("no clip could be classified")
    metrics, curves = {}, {}
    for model in evaluated_models(outcomes):
        metrics[model], curves[model] = model_metrics(outcomes, model)
    return metrics, curves


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_errors_csv(path: Path, outcomes: Sequence[ClipOutcome], models: Sequence[str], root: Path) -> int:
    """Clips that at least one model got wrong; the product decision's mistakes first."""
    wrong = [o for o in outcomes if any(o.predicted(m) != o.clip.label for m in models)]
    wrong.sort(key=lambda o: (o.predicted(DECISION_MODEL) == o.clip.label if DECISION_MODEL in models else False,
                              str(o.clip.path)))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source", "sample_rate", *models, f"p_true_{DECISION_MODEL}",
                         "windows", "gated_windows"])
        for o in wrong:
            p_true = o.result.per_model.get(DECISION_MODEL, {}).get(o.clip.label, "")
            writer.writerow([_relative(o.clip.path, root), o.clip.label, o.clip.source, o.sample_rate or "",
                             *(o.predicted(m) for m in models), p_true, o.result.windows, o.result.gated_windows])
    return len(wrong)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_report(metrics: dict, models: Sequence[str]) -> str:
    """A short markdown summary: headline table, per-source and per-rate accuracy, links to the figures."""
    meta = metrics["meta"]
    lines = [f"# Evaluation: {meta['split']} split of {meta['manifest']}", "",
             f"{meta['clips']} clips, {meta['skipped_clips']} skipped, {meta['errors']} misclassified by at least "
             f"one model ([errors.csv](errors.csv)); model versions: "
             + ", ".join(f"{k} `{v}`" for k, v in meta["model_versions"].items()), "",
             f"The clip's label is `{DECISION_MODEL}`: the ensemble average, Normal where YAMNet's AudioSet scores "
             "hear laughter, a cat or an animal over the cry (the vetoes the alarms obey). Intervals: 95%, resampling "
             "clip groups.", "",
             "| model | accuracy | macro F1 [95% interval] | macro precision | macro recall | ECE | "
             + " | ".join(f"AUC {label}" for label in LABELS) + " |",
             "|---" * (6 + len(LABELS)) + "|"]
    for model in models:
        m = metrics[model]
        low, high = m["ci95"]["macro_f1"]
        cells = [_fmt(m["accuracy"]), f"{_fmt(m['macro_f1'])} [{_fmt(low)}, {_fmt(high)}]"]
        cells += [_fmt(m[key]) for key in ("macro_precision", "macro_recall", "ece")]
        cells += [_fmt(m["roc"][label]["auc"]) for label in LABELS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for title, key in (("Accuracy per source", "per_source"), ("Accuracy per stored sample rate", "per_sample_rate")):
        lines += ["", f"## {title}", "", "| group | clips | labels | " + " | ".join(models) + " |",
                  "|---" * (3 + len(models)) + "|"]
        for group, row in meta[key].items():
            labels = ", ".join(f"{k} {v}" for k, v in sorted(row["labels"].items()))
            lines.append(f"| {group} | {row['clips']} | {labels} | "
                         + " | ".join(f"{row['accuracy'][m]:.3f}" for m in models) + " |")
    if meta.get("single_vs_ensemble"):
        lines += ["", f"## Single branch minus {DECISION_MODEL}", "",
                  "Paired bootstrap over clip groups; an interval containing 0 is within the noise of this set.", "",
                  "| model | accuracy difference [95% interval] | macro-F1 difference [95% interval] |",
                  "|---|---|---|"]
        for model, figures in meta["single_vs_ensemble"].items():
            cells = [f"{figures[k]['difference']:+.3f} [{figures[k]['ci95'][0]:+.3f}, {figures[k]['ci95'][1]:+.3f}]"
                     for k in ("accuracy", "macro_f1")]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if meta.get("weight_sweep"):
        lines += ["", "## Ensemble average vs. fusion weight", "",
                  f"`fusion.weight_yamnet` in use: {meta['fusion_weight_yamnet']:g} (choose it on val, not on test)",
                  "",
                  "| weight_yamnet | " + " | ".join(f"{row['weight_yamnet']:g}" for row in meta["weight_sweep"]) + " |",
                  "|---" * (1 + len(meta["weight_sweep"])) + "|"]
        for key in ("accuracy", "macro_f1"):
            lines.append(f"| {key} | " + " | ".join(f"{row[key]:.3f}" for row in meta["weight_sweep"]) + " |")
    lines += ["", "## Figures", ""]
    for model in models:
        lines.append(f"### {model}\n\n![confusion {model}](confusion_{model}.png) ![ROC {model}](roc_{model}.png)\n")
    return "\n".join(lines) + "\n"


def write_report(out: Path, metrics: dict, curves: dict[str, dict], outcomes: Sequence[ClipOutcome],
                 root: Path) -> None:
    """All files of DIR: metrics.json, roc_<model>.json, confusion_/roc_<model>.png, errors.csv, report.md."""
    from .plots import plot_confusion_matrix, plot_roc  # matplotlib only when writing figures

    out.mkdir(parents=True, exist_ok=True)
    models = [m for m in MODEL_KEYS if m in curves]
    metrics["meta"]["errors"] = write_errors_csv(out / "errors.csv", outcomes, models, root)
    for model in models:
        (out / f"roc_{model}.json").write_text(json.dumps(curves[model]) + "\n", encoding="utf-8")
        plot_confusion_matrix(np.array(metrics[model]["confusion_matrix"]), LABELS, f"{model}: confusion matrix",
                              out / f"confusion_{model}.png")
        plot_roc(curves[model], f"{model}: one-vs-rest ROC", out / f"roc_{model}.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(metrics, models), encoding="utf-8")


def evaluate(selection: Selection, classifiers: Classifiers, cfg: Config, out: Path) -> dict:
    """Classify the selection, write every report file into ``out``; returns the metrics.json content."""
    outcomes, skipped = classify_clips(selection.clips, classifiers, cfg)
    metrics, curves = compute_metrics(outcomes)
    models = [m for m in MODEL_KEYS if m in metrics]
    fusion = classifiers.resolve_fusion(cfg.fusion)
    root = selection.manifest.parent if selection.manifest.is_file() else selection.manifest
    metrics["meta"] = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifest": str(selection.manifest),
        "manifest_sha256": selection.manifest_sha256,
        "split": selection.split,
        "split_file": str(selection.split_file) if selection.split_file else None,
        "clips": len(outcomes),
        "skipped_clips": len(skipped),
        "skipped": [{"path": _relative(s.clip.path, root), "reason": s.reason} for s in skipped],
        "clips_fully_gated": sum(o.result.gated_windows == 0 for o in outcomes),
        "model_manifest": str(classifiers.manifest_path),
        "model_versions": classifiers.versions,
        "decision_model": DECISION_MODEL,
        "per_source": breakdown(outcomes, models, lambda o: o.clip.source or "<none>"),
        "per_sample_rate": breakdown(outcomes, models, lambda o: o.sample_rate or "unknown"),
        "fusion_weight_yamnet": fusion.weight_yamnet / (fusion.weight_yamnet + fusion.weight_wav2vec2),
        "weight_sweep": weight_sweep(outcomes, fusion),
        "single_vs_ensemble": single_models_vs_ensemble(outcomes, models),
    }
    write_report(out, metrics, curves, outcomes, root)
    log.info("evaluation of %d clips written to %s: %s", len(outcomes), out,
             ", ".join(f"{m} acc {metrics[m]['accuracy']:.3f} F1 {metrics[m]['macro_f1']:.3f}" for m in models))
    return metrics


FEEDBACK_REPORT = "feedback.json"


def evaluate_feedback(manifest: Path, classifiers: Classifiers, cfg: Config, out: Path,
                      seed: int = DEFAULT_SPLIT_SEED) -> dict | None:
    """How the models score the feedback clips (pinned to train, so not a test: a parent's check that last night's
    false alarm is now Normal). Writes ``out/feedback.json``; None when the data holds no feedback clip."""
    data = dataset_split(manifest, seed)
    clips = [c for split in SPLITS for c in data.split[split] if c.fixed_split is not None]
    if not clips:
        return None
    outcomes, skipped = classify_clips(clips, classifiers, cfg)
    rows = [{"path": str(o.clip.path), "label": o.clip.label, "split": o.clip.fixed_split,
             "predicted": o.result.label, "correct": o.result.label == o.clip.label, "probs": o.result.probs,
             "model_labels": o.result.per_model_labels} for o in outcomes]
    report = {"clips": len(rows), "correct": sum(r["correct"] for r in rows), "report": str(out / FEEDBACK_REPORT),
              "skipped": [{"path": str(s.clip.path), "reason": s.reason} for s in skipped],
              "model_versions": classifiers.versions, "per_clip": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / FEEDBACK_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("feedback clips: %d of %d now classified as their filed label (%s)", report["correct"], len(rows),
             out / FEEDBACK_REPORT)
    return report


def add_selection_options(parser: argparse.ArgumentParser, split_default: str | None, split_help: str) -> None:
    """``--manifest``, ``--split``, ``--seed``: which labelled clips (``select_clips``), for every command that
    reads them."""
    parser.add_argument("--manifest", type=Path, metavar="CSV|DIR",
                        help="labelled clips: a manifest CSV or a <label>/*.wav folder (default: the shared data)")
    parser.add_argument("--split", choices=(*SPLITS, ALL_CLIPS), default=split_default, help=split_help)
    parser.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed (must match the build's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery-monitor evaluate",
        description="Classify labelled clips with the built models (as `nursery-monitor classify` does) and write "
                    "metrics.json, ROC curves, confusion-matrix PNGs, report.md and errors.csv.")
    add_selection_options(parser, None, "which clips (default: test for the shared data, all for any other manifest)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: build/reports/eval)")
    add_config_option(parser)
    parser.add_argument("--models", type=Path, metavar="MANIFEST_JSON",
                        help="model manifest to evaluate (default: the config's models.manifest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_command_config("evaluate", args.config)
    if cfg is None:
        return EXIT_CONFIG
    setup_logging(cfg.log_level)
    if args.models is not None:
        cfg.models.manifest = str(args.models.resolve())
    try:
        selection = select_clips(args.manifest, args.split, args.seed)
        classifiers = load_classifiers(cfg)
        evaluate(selection, classifiers, cfg, args.out or default_eval_dir())
    except (ModelError, ValueError, OSError) as exc:
        return fail("evaluate", exc)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Label audit: the clips whose label YAMNet's own AudioSet scores contradict, as a list to listen to.

A cry clip in which AudioSet hears no cry or scream in any window, or a Normal clip it hears as one, is either
a hard case or a wrong label, and a wrong label costs twice: a model trained on it learns the mistake, and a
test split holding it caps the recall it can show. AudioSet's scores come from YAMNet before any training of
ours, so the audit does not depend on the models it would judge. It changes nothing: it writes
``build/reports/audit/audit.json`` and ``audit.md``, and a person decides.

    nursery-monitor audit-labels [--manifest CSV|DIR] [--split train|val|test|all] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from monitor.command import EXIT_CONFIG, EXIT_OK, add_config_option, fail, load_command_config, setup_logging
from monitor.config import Config
from monitor.constants import ALERT_LABELS, AUDIOSET_HEARS_ALERT, YAMNET_VOTER_CLASSES
from monitor.paths import build_dir, default_manifest_csv, default_yamnet_tflite
from monitor.preprocess import prepare_batch
from monitor.windows import hop_samples_from_seconds

from .data import Clip
from .evaluate import ALL_CLIPS, add_selection_options, select_clips
from .split import SPLITS, dataset_split
from .windows import build_window_set
from .yamnet_features import convert_yamnet, extract_embeddings

log = logging.getLogger(__name__)

ALERT_ROWS = tuple(sorted({row for rows in YAMNET_VOTER_CLASSES.values() for row in rows}))
"""AudioSet rows that count as hearing a cry or a scream (Baby cry, Crying / sobbing, Screaming)."""


@dataclass(frozen=True)
class AuditSettings:
    """Where AudioSet's evidence contradicts a label; training-only, like ``HeadConfig``."""

    min_alert_evidence: float = AUDIOSET_HEARS_ALERT
    """A Crying or Screaming clip is listed when no window's AudioSet score for a cry or scream reaches this."""
    max_normal_evidence: float = 0.5
    """A Normal clip is listed when a window's AudioSet score for a cry or scream reaches this: AudioSet's own
    "yes". Cats and laughing babies land here too: hard negatives, rightly Normal, but worth knowing."""
    threads: int = 2
    """ONNX Runtime threads for YAMNet."""


@dataclass(frozen=True)
class ClipEvidence:
    """One clip's strongest AudioSet cry-or-scream score over its windows, and what AudioSet hears most in it."""

    evidence: float
    top_class: str
    top_score: float


def clip_evidence(scores: np.ndarray, clip_index: np.ndarray, active: np.ndarray, class_names: Sequence[str],
                  alert_rows: Sequence[int] = ALERT_ROWS) -> dict[int, ClipEvidence]:
    """Per clip: the max over its active windows (all its windows when none is active: a silent clip is still
    judged) of the ``alert_rows`` scores, and the class with the highest mean score over those windows."""
    scores = np.asarray(scores, dtype=np.float64)
    out: dict[int, ClipEvidence] = {}
    for clip in np.unique(clip_index):
        rows = clip_index == clip
        chosen = rows & active if np.any(rows & active) else rows
        mean = scores[chosen].mean(axis=0)
        top = int(mean.argmax())
        out[int(clip)] = ClipEvidence(float(scores[chosen][:, list(alert_rows)].max()), class_names[top],
                                      float(mean[top]))
    return out


def contradicts(label: str, evidence: float, settings: AuditSettings) -> bool:
    """True when AudioSet's evidence goes against the label (``AuditSettings``)."""
    if label in ALERT_LABELS:
        return evidence < settings.min_alert_evidence
    return evidence >= settings.max_normal_evidence


def audit_rows(clips: Sequence[Clip], evidence: dict[int, ClipEvidence], settings: AuditSettings,
               split_of: dict[Path, str] | None = None) -> list[dict]:
    """The listed clips, strongest contradiction first within each label."""
    split_of = split_of or {}
    rows = []
    for index, found in evidence.items():
        clip = clips[index]
        if contradicts(clip.label, found.evidence, settings):
            rows.append({"path": str(clip.path), "label": clip.label, "source": clip.source, "group": clip.group,
                         "split": split_of.get(clip.path), "cry_or_scream_evidence": round(found.evidence, 4),
                         "audioset_top": found.top_class, "audioset_top_score": round(found.top_score, 4)})
    alert_first = {label: i for i, label in enumerate(ALERT_LABELS)}
    return sorted(rows, key=lambda r: (alert_first.get(r["label"], len(alert_first)),
                                       r["cry_or_scream_evidence"] * (1 if r["label"] in alert_first else -1)))


def summarise(clips: Sequence[Clip], rows: Sequence[dict]) -> dict:
    """Counts per label and per (label, source): how much of each is listed."""
    totals = Counter(c.label for c in clips)
    listed = Counter(r["label"] for r in rows)
    by_source = Counter(f"{r['label']} / {r['source']}" for r in rows)
    by_split = Counter(f"{r['label']} / {r['split']}" for r in rows if r["split"])
    return {"clips": len(clips), "listed": len(rows),
            "by_label": {label: {"listed": listed[label], "of": totals[label]} for label in sorted(totals)},
            "by_label_and_source": dict(by_source.most_common()), "by_label_and_split": dict(sorted(by_split.items()))}


def write_audit(out: Path, summary: dict, rows: Sequence[dict], settings: AuditSettings) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"settings": asdict(settings), "summary": summary, "clips": list(rows)}
    (out / "audit.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    lines = ["# Label audit", "",
             f"{summary['listed']} of {summary['clips']} clips to listen to: Crying / Screaming clips where no "
             f"window's AudioSet cry-or-scream score reaches {settings.min_alert_evidence}, Normal clips where one "
             f"reaches {settings.max_normal_evidence}. Nothing was changed.", "",
             "| label | split | source | evidence | AudioSet hears most | path |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['split'] or ''} | {r['source']} | {r['cry_or_scream_evidence']:.3f} | "
              f"{r['audioset_top']} ({r['audioset_top_score']:.2f}) | {r['path']} |" for r in rows]
    (out / "audit.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _class_names(count: int) -> list[str]:
    """AudioSet display names from the class map beside the YAMNet model; row numbers when it is missing."""
    class_map = default_yamnet_tflite().with_name("yamnet_class_map.csv")
    try:
        with class_map.open(newline="", encoding="utf-8") as handle:
            names = [row["display_name"] for row in csv.DictReader(handle)]
    except (OSError, KeyError) as exc:
        log.warning("%s unreadable (%s): AudioSet classes shown by row number", class_map, exc)
        return [f"row {i}" for i in range(count)]
    return names if len(names) == count else [f"row {i}" for i in range(count)]


def _split_of(manifest: Path | None, seed: int) -> dict[Path, str]:
    """Each clip's split when the clips form a grouped split (the shared data does); empty otherwise."""
    try:
        data = dataset_split(manifest or default_manifest_csv(), seed)
    except ValueError:
        return {}
    return {clip.path: name for name in SPLITS for clip in data.split.get(name, [])}


def run_audit(clips: Sequence[Clip], cfg: Config, settings: AuditSettings, out: Path,
              split_of: dict[Path, str] | None = None, yamnet_tflite: Path | None = None,
              progress: bool = True) -> dict:
    """Windows (the training chain, cached) -> AudioSet scores (cached) -> the listed clips -> the report."""
    hop = hop_samples_from_seconds(cfg.window.training_hop_seconds)
    windows = build_window_set(list(clips), cfg.preprocess, hop, cfg.gate, progress=progress)
    _, scores = extract_embeddings(prepare_batch(windows.windows, cfg.preprocess), convert_yamnet(yamnet_tflite),
                                   threads=settings.threads, progress=progress)
    evidence = clip_evidence(scores, windows.clip_index, windows.active, _class_names(scores.shape[1]))
    rows = audit_rows(clips, evidence, settings, split_of)
    summary = summarise(clips, rows)
    write_audit(out, summary, rows, settings)
    log.info("label audit: %d of %d clips listed in %s", len(rows), len(clips), out / "audit.md")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery-monitor audit-labels",
        description="List the clips whose label YAMNet's AudioSet scores contradict (cries it hears no cry in, "
                    "Normal clips it hears as a cry), to listen to before training; changes nothing.")
    add_selection_options(parser, ALL_CLIPS, "which clips (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: build/reports/audit)")
    add_config_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_command_config("audit-labels", args.config)
    if cfg is None:
        return EXIT_CONFIG
    setup_logging(cfg.log_level)
    try:
        selection = select_clips(args.manifest, args.split, args.seed)
        summary = run_audit(selection.clips, cfg, AuditSettings(), args.out or build_dir() / "reports" / "audit",
                            _split_of(args.manifest, args.seed))
    except (ValueError, OSError) as exc:
        return fail("audit-labels", exc)
    print(json.dumps(summary, indent=1))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

"""The ablation of the training-only preprocessing options (``training.options``): the YAMNet head trained
once per combination on the same split, val metrics of each. Kept apart from the options themselves, which
the window builder imports, so the options never import the trainer.

    python -m training.ablation [--manifest CSV|DIR] [--seed N]   # writes build/reports/ablation.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from monitor.command import setup_logging
from monitor.config import Config
from monitor.paths import build_dir, default_manifest_csv

from .data import load_dataset, manifest_sha256
from .split import DEFAULT_SPLIT_SEED, load_or_make_split, split_file_for
from .train_yamnet import HeadConfig, fit_and_evaluate

log = logging.getLogger(__name__)

ABLATION_VARIANTS = {
    "baseline": {},
    "noise_reduction": {"noise_reduction": True},
    "pitch_normalisation": {"pitch_normalisation": True},
    "both": {"noise_reduction": True, "pitch_normalisation": True},
}


def run_ablation(manifest: Path, seed: int, augment_copies: int = 1) -> dict:
    """Train the YAMNet head once per option combination on the same split; val metrics of each."""
    clips = load_dataset(manifest)
    digest = manifest_sha256(manifest)
    split = load_or_make_split(clips, split_file_for(digest), seed=seed, manifest_hash=digest)
    head_cfg = HeadConfig(augment_copies=augment_copies)
    results = {}
    for name, overrides in ABLATION_VARIANTS.items():
        cfg = Config()
        cfg.preprocess = dataclasses.replace(cfg.preprocess, **overrides)
        _, metrics, _ = fit_and_evaluate(clips, split, cfg, head_cfg, seed, parts=("val",))
        val = metrics["val"]
        # the options change which alert windows are active, so window counts differ between variants
        results[name] = {"val_window_accuracy": val["window"]["accuracy"], "val_window_macro_f1":
                         val["window"]["macro_f1"], "val_windows": val["window"]["n"],
                         "val_clip_accuracy": val["clip"]["accuracy"], "val_clip_macro_f1": val["clip"]["macro_f1"],
                         "val_clips": val["clip"]["n"]}
        log.info("ablation %s: %s", name, results[name])
    return {"seed": seed, "manifest_sha256": digest, "augment_copies": augment_copies, "variants": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Ablation of the training-only preprocessing options")
    parser.add_argument("--manifest", type=Path, default=default_manifest_csv())
    parser.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed")
    parser.add_argument("--copies", type=int, default=1, help="augmented copies per training window")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    report = run_ablation(args.manifest, args.seed, args.copies)
    out = build_dir() / "reports" / "ablation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

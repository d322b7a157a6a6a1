"""How much the gate skips, and whether it loses cries: every manifest clip through the runtime path.

    python -m bench.gate_report --manifest /work/shared/data/manifest.csv [--config FILE]

Each clip goes iter_conditioned_blocks -> SlidingWindower -> Gate. Two modes, both reported:
- ``clip``: a fresh gate per clip (the start of a stream: the floor is still being learnt);
- ``stream``: one gate per source, its clips played back to back in manifest order (a long
  recording of that kind of sound: the floor has settled, and for cries it has climbed as far
  as hours of crying can push it).
Until the classifiers exist, "energetic" alert windows (level within ``--energetic-db`` of the
clip's loudest window) stand in for the windows a model would call Crying / Screaming.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from monitor.audiofile import AudioFileError, iter_conditioned_blocks
from monitor.command import EXIT_CONFIG, EXIT_OK, add_config_option, fail, load_command_config, setup_logging
from monitor.config import Config
from monitor.constants import ALERT_LABELS, WINDOW_SAMPLES
from monitor.gate import Gate
from monitor.windows import SlidingWindower, hop_samples_from_seconds
from training.data import Clip, load_dataset

log = logging.getLogger(__name__)

DEFAULT_ENERGETIC_DB = 30.0
WORST_CLIPS_LISTED = 10


@dataclass
class ClipResult:
    clip: Clip
    levels: np.ndarray
    passed: np.ndarray
    reasons: Counter = field(default_factory=Counter)


@dataclass
class PassCount:
    windows: int = 0
    passed: int = 0

    def add(self, passed: np.ndarray) -> None:
        self.windows += int(passed.size)
        self.passed += int(np.count_nonzero(passed))

    def summary(self) -> dict:
        fraction = self.passed / self.windows if self.windows else None
        return {"windows": self.windows, "passed": self.passed,
                "pass_fraction": None if fraction is None else round(fraction, 5)}


def clip_samples(clip: Clip, cfg: Config) -> Iterator[np.ndarray]:
    """Conditioned blocks of a clip, padded with silence to one window when shorter (as ``clip_windows`` does)."""
    total = 0
    for block in iter_conditioned_blocks(clip.path, cfg.preprocess, cfg.audio.block_seconds):
        total += block.size
        yield block
    if 0 < total < WINDOW_SAMPLES:
        yield np.zeros(WINDOW_SAMPLES - total, dtype=np.float32)


def run_clip(clip: Clip, gate: Gate, windower: SlidingWindower, cfg: Config) -> ClipResult:
    """One clip's windows through the gate; the windower restarts at the gate's current stream position."""
    windower.reset(start_seconds=windower.position_seconds)
    levels, passed, reasons = [], [], Counter()
    for block in clip_samples(clip, cfg):
        for window in windower.push(block):
            decision = gate.assess(window)
            levels.append(decision.level_dbfs)
            passed.append(decision.passed)
            reasons[decision.reason] += 1
    return ClipResult(clip, np.array(levels), np.array(passed, dtype=bool), reasons)


def run_mode(clips: list[Clip], cfg: Config, fresh_gate_per_clip: bool) -> list[ClipResult]:
    hop = hop_samples_from_seconds(cfg.window.hop_seconds)
    gates: dict[str, Gate] = {}
    windower = SlidingWindower(hop)
    results = []
    for clip in clips:
        if fresh_gate_per_clip or clip.source not in gates:
            gates[clip.source] = Gate(cfg.gate)
        try:
            results.append(run_clip(clip, gates[clip.source], windower, cfg))
        except AudioFileError as exc:
            log.warning("skipped: %s", exc)
    return results


def energetic_mask(levels: np.ndarray, energetic_db: float) -> np.ndarray:
    """Windows within ``energetic_db`` of the clip's loudest window."""
    return levels >= levels.max() - energetic_db if levels.size else np.zeros(0, dtype=bool)


def summarise(results: Iterable[ClipResult], energetic_db: float) -> dict:
    by_label: dict[str, PassCount] = defaultdict(PassCount)
    by_source: dict[str, PassCount] = defaultdict(PassCount)
    energetic: dict[str, PassCount] = defaultdict(PassCount)
    reasons: dict[str, Counter] = defaultdict(Counter)
    misses = []
    for result in results:
        label, source = result.clip.label, result.clip.source
        by_label[label].add(result.passed)
        by_source[source].add(result.passed)
        reasons[source].update(result.reasons)
        if label in ALERT_LABELS:
            mask = energetic_mask(result.levels, energetic_db)
            energetic[label].add(result.passed[mask])
            energetic["all"].add(result.passed[mask])
            missed = int(np.count_nonzero(mask & ~result.passed))
            if missed:
                misses.append((missed, str(result.clip.path)))
    misses.sort(reverse=True)
    return {
        "by_label": {k: v.summary() for k, v in sorted(by_label.items())},
        "by_source": {k: v.summary() for k, v in sorted(by_source.items())},
        "reasons_by_source": {k: dict(v.most_common()) for k, v in sorted(reasons.items())},
        "alert_energetic_windows": {k: v.summary() for k, v in sorted(energetic.items())},
        "alert_clips_with_missed_energetic_windows": len(misses),
        "worst_alert_clips": [{"missed_windows": n, "path": p} for n, p in misses[:WORST_CLIPS_LISTED]],
    }


def build_report(clips: list[Clip], cfg: Config, energetic_db: float, modes: list[str]) -> dict:
    report = {"clips": len(clips), "energetic_db": energetic_db, "hop_seconds": cfg.window.hop_seconds,
              "gate": asdict(cfg.gate), "modes": {}}
    for mode in modes:
        results = run_mode(clips, cfg, fresh_gate_per_clip=(mode == "clip"))
        report["modes"][mode] = summarise(results, energetic_db)
        report["modes"][mode]["clips_read"] = len(results)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate_report", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="manifest.csv (path,label,source columns)")
    add_config_option(parser)
    parser.add_argument("--mode", choices=("clip", "stream", "both"), default="both")
    parser.add_argument("--energetic-db", type=float, default=DEFAULT_ENERGETIC_DB,
                        help="alert windows within this many dB of the clip's loudest window are 'energetic'")
    parser.add_argument("--source", action="append", default=None, help="only clips of this source (repeatable)")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    cfg = load_command_config("gate_report", args.config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        clips = load_dataset(args.manifest)
    except (ValueError, OSError) as exc:
        return fail("gate_report", exc)
    if args.source:
        clips = [c for c in clips if c.source in args.source]
    modes = ["clip", "stream"] if args.mode == "both" else [args.mode]
    print(json.dumps(build_report(clips, cfg, args.energetic_db, modes), indent=2))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

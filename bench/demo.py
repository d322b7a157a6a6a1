"""Composes the README demo recording from held-out test clips: speech, a cry, laughter, a scream.

The recording is built from ../shared at demo time (never committed), so the demo shows the
models on audio they were not trained on.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.audiofile import load_clip
from monitor.command import EXIT_OK, setup_logging
from monitor.config import PreprocessConfig
from monitor.constants import SAMPLE_RATE
from monitor.paths import build_dir, default_manifest_csv
from monitor.signal_helpers import rms_dbfs
from training.data import load_dataset, manifest_sha256
from training.split import load_or_make_split, split_file_for

log = logging.getLogger(__name__)

SCENE = (  # (label, source or None, gap after in seconds): what a parent's evening sounds like
    ("Normal", "ms-snsd-clean-speech", 2.0),
    ("Crying", None, 6.0),
    ("Normal", "baby-laugh", 2.0),
    ("Normal", "esc50-noise", 2.0),
    ("Screaming", None, 4.0),
)
LEVEL_DBFS = -26.0
ROOM_NOISE_DBFS = -60.0
LEAD_IN_SECONDS = 2.0


def compose(manifest: Path, seed: int = 7) -> np.ndarray:
    clips = load_dataset(manifest)
    manifest_hash = manifest_sha256(manifest)
    split = load_or_make_split(clips, split_file_for(manifest_hash), manifest_hash=manifest_hash)
    pool = split["test"] or clips
    rng = np.random.default_rng(seed)
    noise_std = 10 ** (ROOM_NOISE_DBFS / 20)
    parts = [rng.normal(0, noise_std, int(LEAD_IN_SECONDS * SAMPLE_RATE)).astype(np.float32)]
    for label, source, gap in SCENE:
        candidates = [c for c in pool if c.label == label and (source is None or c.source == source)] or \
                     [c for c in clips if c.label == label]
        clip = candidates[int(rng.integers(len(candidates)))]
        audio = load_clip(clip.path, PreprocessConfig(bandwidth_hz=None))
        audio = audio * np.float32(10 ** ((LEVEL_DBFS - rms_dbfs(audio)) / 20))
        log.info("demo: %.1f s %s (%s)", audio.size / SAMPLE_RATE, label, clip.path.name)
        parts += [np.clip(audio, -1, 1), rng.normal(0, noise_std, int(gap * SAMPLE_RATE)).astype(np.float32)]
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=default_manifest_csv())
    parser.add_argument("--out", type=Path, default=build_dir() / "demo" / "demo.flac")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    audio = compose(args.manifest)
    sf.write(args.out, audio, SAMPLE_RATE, subtype="PCM_16")
    print(f"demo recording: {args.out} ({audio.size / SAMPLE_RATE:.1f} s)")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

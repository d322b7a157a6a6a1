"""Small training datasets for the data, split and feedback tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from training.data import Clip


def write_tone(path: Path, seconds: float = 1.0, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def synthetic_clips(seed: int = 0) -> list[Clip]:
    """Groups of very different sizes, like the shared data: a few huge groups and many singletons."""
    rng = np.random.default_rng(seed)
    layout = {  # (label, source): list of group sizes
        ("Crying", "phone"): list(rng.integers(1, 4, size=120)),
        ("Screaming", "web"): [1] * 40,
        ("Normal", "speech"): [40, 45, 35],
        ("Normal", "laugh"): [50, 55],
        ("Normal", "silence"): [30],
        ("Normal", "noise"): [1] * 60,
    }
    clips = []
    for (label, source), sizes in layout.items():
        for g, size in enumerate(sizes):
            for k in range(int(size)):
                clips.append(Clip(Path(f"/data/{source}/{g}_{k}.flac"), label, f"{source}:{g}", source, 1.0, 16000))
    return clips

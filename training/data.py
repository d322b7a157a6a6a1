"""Labelled clips for training and evaluation: the shared manifest CSV or a folder of one's own recordings.

Both sources become the same list of ``Clip`` records, so the split, training and evaluation code never
care where the audio came from. Every problem (unknown label, missing column or file) is a one-line
``ValueError`` naming the file and, for a CSV, the line.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.constants import DATASET_LABELS, LABELS

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
REQUIRED_COLUMNS = ("path", "label", "source", "group")
"""The CSV columns a clip needs; the other shared columns (licence, durations, rates, origin) are optional."""

FOLDER_SOURCE = "own-recordings"
"""``Clip.source`` of clips read from a folder tree."""


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    """Product label, one of ``constants.LABELS``."""
    group: str
    """Recording / speaker / device id: all clips of a group go to the same split."""
    source: str
    duration_s: float | None
    sample_rate: int | None


def product_label(name: str) -> str | None:
    """``cry`` / ``Crying`` / ``crying`` -> ``Crying``; None when the name is not a label."""
    key = name.strip().lower()
    if key in DATASET_LABELS:
        return DATASET_LABELS[key]
    by_lower = {label.lower(): label for label in LABELS}
    return by_lower.get(key)


def _known_labels() -> str:
    return ", ".join([*DATASET_LABELS, *LABELS])


def _optional_number(text: str | None, kind: type) -> float | int | None:
    if text is None or not text.strip():
        return None
    return kind(float(text))


def _load_csv(csv_path: Path) -> list[Clip]:
    root = csv_path.parent
    clips: list[Clip] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                             f"(header: {', '.join(reader.fieldnames or [])})")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            label = product_label(row["label"] or "")
            if label is None:
                raise ValueError(f"{where}: unknown label {row['label']!r} (known: {_known_labels()})")
            rel = (row["path"] or "").strip()
            if not rel:
                raise ValueError(f"{where}: empty path")
            path = (root / rel).resolve()
            if not path.is_file():
                raise ValueError(f"{where}: audio file not found: {path}")
            group = (row["group"] or "").strip()
            if not group:
                raise ValueError(f"{where}: empty group (clips of one recording/speaker must share a group)")
            try:
                duration = _optional_number(row.get("duration_s"), float)
                rate = _optional_number(row.get("sample_rate"), int)
            except ValueError:
                raise ValueError(f"{where}: duration_s / sample_rate must be numbers") from None
            clips.append(Clip(path=path, label=label, group=group, source=(row["source"] or "").strip(),
                              duration_s=duration, sample_rate=rate))
    if not clips:
        raise ValueError(f"{csv_path}: no clips listed")
    return clips


def _audio_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() in AUDIO_SUFFIXES:
            files.append(path)
        else:
            log.warning("ignoring %s: not a %s file", path, "/".join(AUDIO_SUFFIXES))
    return files


def _folder_group(label_dir: Path, path: Path) -> str:
    """``<label>/<group>/.../x.wav`` -> ``<group>``; a file directly in ``<label>/`` is its own group."""
    rel = path.relative_to(label_dir)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return f"{label_dir.name}/{path.stem}"


def _load_folder(root: Path) -> list[Clip]:
    clips: list[Clip] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            raise ValueError(f"{entry}: audio must be inside a label folder ({', '.join(LABELS)})")
        label = product_label(entry.name)
        if label is None:
            raise ValueError(f"{entry}: folder name is not a label (known: {_known_labels()})")
        for path in _audio_files(entry):
            clips.append(Clip(path=path.resolve(), label=label, group=_folder_group(entry, path),
                              source=FOLDER_SOURCE, duration_s=None, sample_rate=None))
    if not clips:
        raise ValueError(f"{root}: no {'/'.join(AUDIO_SUFFIXES)} files under its label folders")
    return clips


def load_dataset(source: Path) -> list[Clip]:
    """Clips of a manifest CSV (paths relative to it) or of a ``<label>/*.wav|flac|ogg`` folder tree."""
    source = Path(source)
    if source.is_dir():
        clips = _load_folder(source)
    elif source.is_file():
        clips = _load_csv(source)
    else:
        raise ValueError(f"{source}: no such manifest CSV or folder")
    log.info("%d clips from %s", len(clips), source)
    return clips


def class_weights(label_indices: np.ndarray) -> np.ndarray:
    """Loss weight per label, inverse to its count (mean 1 over the labels present, 0 for an absent one), so
    the few screams count as much as the many cries. Both branches train with it."""
    counts = np.bincount(label_indices, minlength=len(LABELS)).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    return weights / weights[counts > 0].mean()


def clips_signature(clips: list[Clip]) -> list[list]:
    """What identifies a clip list for cache keys: path, label, group and file size of each clip."""
    return [[str(c.path), c.label, c.group, c.path.stat().st_size] for c in clips]


def manifest_sha256(source: Path) -> str:
    """Identity of the training data: the CSV bytes, or the sorted file list with sizes of a folder."""
    source = Path(source)
    digest = hashlib.sha256()
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(f"{path.relative_to(source).as_posix()}\t{path.stat().st_size}\n".encode())
    elif source.is_file():
        digest.update(source.read_bytes())
    else:
        raise ValueError(f"{source}: no such manifest CSV or folder")
    return digest.hexdigest()

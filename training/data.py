"""Labelled clips for training and evaluation: the shared manifest CSV or a folder of one's own recordings.

Both sources become the same list of ``Clip`` records, so the split, training and evaluation code never
care where the audio came from. Every problem (unknown label, missing column or file) is a one-line
``ValueError`` naming the file and, for a CSV, the line.

A folder may hold ``feedback.csv``: the provenance of clips filed by `nursery-monitor feedback`. Those clips
are corrections, not a test: they are pinned to the train split (``Clip.fixed_split``). Several sources
(``build-models --data A --data B``) are joined by ``write_union_manifest`` into one CSV in which each
source keeps its own groups (prefixed with the source's name) and the pinned split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.constants import DATASET_LABELS, FEEDBACK_CSV, LABELS

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
REQUIRED_COLUMNS = ("path", "label", "source", "group")
"""The CSV columns a clip needs; the other shared columns (licence, durations, rates, origin) are optional."""

FOLDER_SOURCE = "own-recordings"
"""``Clip.source`` of clips read from a folder tree."""

FEEDBACK_SOURCE = "feedback"
"""``Clip.source`` of the clips a folder's ``feedback.csv`` lists."""
FEEDBACK_SPLIT = "train"
"""Feedback clips are corrections, not a test: always trained on."""
SPLIT_NAMES = ("train", "val", "test")


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
    fixed_split: str | None = None
    """Pinned to this split whatever the grouped split decides (feedback clips: always ``train``)."""


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
            fixed_split = (row.get("split") or "").strip() or None
            if fixed_split is not None and fixed_split not in SPLIT_NAMES:
                raise ValueError(f"{where}: split must be empty or one of {', '.join(SPLIT_NAMES)}, "
                                 f"got {fixed_split!r}")
            clips.append(Clip(path=path, label=label, group=group, source=(row["source"] or "").strip(),
                              duration_s=duration, sample_rate=rate, fixed_split=fixed_split))
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


def feedback_files(root: Path) -> set[Path]:
    """The clips ``feedback.csv`` in ``root`` lists (resolved paths); empty when there is none."""
    listing = root / FEEDBACK_CSV
    if not listing.is_file():
        return set()
    with listing.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{listing}: missing column path (header: {', '.join(reader.fieldnames or [])})")
        return {(root / row["path"]).resolve() for row in reader if (row["path"] or "").strip()}


def _load_folder(root: Path) -> list[Clip]:
    clips: list[Clip] = []
    corrections = feedback_files(root)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == FEEDBACK_CSV:
            continue
        if entry.is_file():
            raise ValueError(f"{entry}: audio must be inside a label folder ({', '.join(LABELS)})")
        label = product_label(entry.name)
        if label is None:
            raise ValueError(f"{entry}: folder name is not a label (known: {_known_labels()})")
        for path in _audio_files(entry):
            pinned = path.resolve() in corrections
            clips.append(Clip(path=path.resolve(), label=label, group=_folder_group(entry, path),
                              source=FEEDBACK_SOURCE if pinned else FOLDER_SOURCE, duration_s=None, sample_rate=None,
                              fixed_split=FEEDBACK_SPLIT if pinned else None))
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


UNION_COLUMNS = ("path", "label", "source", "group", "split", "duration_s", "sample_rate", "size_bytes")


def source_name(source: Path) -> str:
    """What prefixes a source's groups in a union: the folder's name, or the CSV's folder and stem."""
    source = Path(source).resolve()
    return source.name if source.is_dir() else f"{source.parent.name}/{source.stem}"


def union_clips(sources: list[Path]) -> list[Clip]:
    """The clips of every source; each group is prefixed with its source's name, so no two sources share one."""
    names = [source_name(s) for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two --data sources have the same name ({', '.join(names)}): rename one folder")
    return [dataclasses.replace(clip, group=f"{name}:{clip.group}")
            for source, name in zip(sources, names, strict=True) for clip in load_dataset(source)]


def write_union_manifest(sources: list[Path], folder: Path) -> Path:
    """One manifest CSV (absolute paths) listing the union of ``sources``, named by its content, so every step
    of a build reads it like any manifest; its hash changes when a file is added, removed or resized."""
    rows = [[str(c.path), c.label, c.source, c.group, c.fixed_split or "",
             "" if c.duration_s is None else c.duration_s, "" if c.sample_rate is None else c.sample_rate,
             c.path.stat().st_size] for c in union_clips(sources)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(UNION_COLUMNS)
    writer.writerows(rows)
    text = buffer.getvalue()
    path = Path(folder) / f"union-{hashlib.sha256(text.encode()).hexdigest()[:12]}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(text, encoding="utf-8")
    log.info("union of %d sources: %d clips (%d pinned to train) in %s", len(sources), len(rows),
             sum(1 for r in rows if r[4]), path)
    return path

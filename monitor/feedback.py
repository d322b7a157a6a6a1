"""`nursery-monitor feedback EVENT_ID normal|cry|scream`: "that was (not) a cry" becomes training data.

The event's clip is copied into a user dataset folder as ``<label>/<clip>.flac`` and recorded in its
``feedback.csv`` (where it came from: event, detected label, confidence, time, device). `build-models --data
shared --data FOLDER` then trains on it, always in the train split (``training.data``), and the evaluation
reports how the rebuilt models score every feedback clip. Filing an event again replaces its earlier label.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .clips import ClipInfo
from .config import Config
from .constants import DATASET_LABELS, FEEDBACK_CSV
from .paths import state_dir

FEEDBACK_COLUMNS = ("path", "label", "event_id", "detected_label", "confidence", "start_time", "device_id", "filed_at")


class FeedbackError(ValueError):
    """A feedback that cannot be filed; the message is one line."""


def feedback_dir(cfg: Config) -> Path:
    """``clips.feedback_directory``, else ``feedback`` in the state directory."""
    return cfg.resolve_path(cfg.clips.feedback_directory) if cfg.clips.feedback_directory else state_dir() / "feedback"


@dataclass(frozen=True)
class Filed:
    path: Path
    label: str
    replaced: Path | None


def file_feedback(clip: ClipInfo, label: str, dataset: Path, now: datetime | None = None) -> Filed:
    """Copy ``clip`` into ``dataset/<label>/`` and record it in ``feedback.csv``; ``label`` is normal, cry or
    scream (the dataset's own words, as the shared manifest uses them)."""
    if label not in DATASET_LABELS:
        raise FeedbackError(f"label must be one of {', '.join(DATASET_LABELS)}, got {label!r}")
    dataset = Path(dataset)
    rows = _read_rows(dataset)
    earlier = [row for row in rows if row["event_id"] == clip.event_id]
    replaced = None
    for row in earlier:
        old = dataset / row["path"]
        if old.parent.name != label:
            old.unlink(missing_ok=True)
            replaced = old
    target = dataset / label / clip.path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip.path, target)
    event = clip.event
    filed_at = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = [row for row in rows if row["event_id"] != clip.event_id]
    rows.append({"path": target.relative_to(dataset).as_posix(), "label": label, "event_id": clip.event_id,
                 "detected_label": event.get("label", ""), "confidence": event.get("confidence", ""),
                 "start_time": event.get("start_time", ""), "device_id": event.get("device_id", ""),
                 "filed_at": filed_at})
    _write_rows(dataset, rows)
    return Filed(target, label, replaced)


def _read_rows(dataset: Path) -> list[dict]:
    path = dataset / FEEDBACK_CSV
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(dataset: Path, rows: list[dict]) -> None:
    dataset.mkdir(parents=True, exist_ok=True)
    partial = dataset / f"{FEEDBACK_CSV}.part"
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FEEDBACK_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(dataset / FEEDBACK_CSV)

"""Grouped, label-stratified, seeded train/val/test split.

No group (recording, speaker, device) ever appears in two splits, or the test score would measure
memorised voices and rooms. Groups differ wildly in size (one group holds all room-silence clips, three
speakers hold all spoken digits), so a plain group shuffle misses the ratios: instead a greedy
assignment followed by deterministic hill-climbing (moves and swaps of whole groups) minimises a cost
that weighs, per label, the distance of clip counts from the ratios, then the same per (label, source),
plus a penalty for a (label, source) with enough groups that is missing from a split.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.constants import LABELS
from monitor.paths import build_dir

from .data import SPLIT_NAMES, Clip, load_dataset, manifest_sha256

log = logging.getLogger(__name__)

SPLITS = SPLIT_NAMES
DEFAULT_SPLIT_SEED = 1234
"""Seed of the grouped train / val / test split (each trainer has its own training seed)."""
DEFAULT_RATIOS = (0.7, 0.15, 0.15)

SOURCE_WEIGHT = 0.25
"""Weight of the per-(label, source) ratio cost relative to the per-label one."""
MIN_GROUPS_TO_REPRESENT = 3
"""A (label, source) with at least this many groups should appear in every split."""
MISSING_PENALTY = 1000.0
"""Cost of a (label, source) absent from a split although it has enough groups: dominates ratio costs."""
MAX_PASSES = 50
"""Hill-climbing stops earlier once a full pass improves nothing."""


@dataclass
class _Group:
    name: str
    label: str
    source: str
    clips: list[Clip]

    @property
    def size(self) -> int:
        return len(self.clips)


def _majority(values: list[str], order: tuple[str, ...] = ()) -> str:
    """Most common value; ties go to the earlier value in ``order`` (then alphabetical) so it is deterministic."""
    counts = Counter(values)
    rank = {v: i for i, v in enumerate(order)}
    return min(counts, key=lambda v: (-counts[v], rank.get(v, len(rank)), v))


def _groups(clips: list[Clip]) -> list[_Group]:
    by_name: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_name[clip.group].append(clip)
    return [_Group(name, _majority([c.label for c in members], LABELS), _majority([c.source for c in members]),
                   members) for name, members in sorted(by_name.items())]


class _Assignment:
    """Clip counts per (label, split) and (label, source, split), with an O(1) cost change per move."""

    def __init__(self, groups: list[_Group], ratios: tuple[float, ...]):
        self.groups = groups
        self.ratios = np.asarray(ratios, dtype=np.float64)
        self.where = np.full(len(groups), -1, dtype=np.int64)
        labels = sorted({g.label for g in groups})
        strata = sorted({(g.label, g.source) for g in groups})
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.stratum_index = {s: i for i, s in enumerate(strata)}
        n_splits = len(ratios)
        self.label_counts = np.zeros((len(labels), n_splits))
        self.stratum_counts = np.zeros((len(strata), n_splits))
        self.stratum_groups = np.zeros((len(strata), n_splits), dtype=np.int64)
        label_totals = np.zeros(len(labels))
        stratum_totals = np.zeros(len(strata))
        stratum_n_groups = np.zeros(len(strata), dtype=np.int64)
        for g in groups:
            label_totals[self.label_index[g.label]] += g.size
            stratum_totals[self.stratum_index[(g.label, g.source)]] += g.size
            stratum_n_groups[self.stratum_index[(g.label, g.source)]] += 1
        # floored so an empty row never divides by zero
        self.label_targets = np.maximum(label_totals[:, None] * self.ratios[None, :], 1e-9)
        self.stratum_targets = np.maximum(stratum_totals[:, None] * self.ratios[None, :], 1e-9)
        self.must_represent = stratum_n_groups >= MIN_GROUPS_TO_REPRESENT

    @staticmethod
    def _row_cost(counts: np.ndarray, targets: np.ndarray) -> float:
        return float(((counts - targets) ** 2 / targets).sum())

    def _cost_of(self, li: int, si: int, label_row: np.ndarray, stratum_row: np.ndarray,
                 groups_row: np.ndarray) -> float:
        cost = self._row_cost(label_row, self.label_targets[li])
        cost += SOURCE_WEIGHT * self._row_cost(stratum_row, self.stratum_targets[si])
        if self.must_represent[si]:
            cost += MISSING_PENALTY * int((groups_row == 0).sum())
        return cost

    def _rows(self, group: _Group) -> tuple[int, int]:
        return self.label_index[group.label], self.stratum_index[(group.label, group.source)]

    def delta(self, gi: int, to: int) -> float:
        """Cost change of moving group ``gi`` (assigned or not) to split ``to``."""
        group = self.groups[gi]
        li, si = self._rows(group)
        rows = (self.label_counts[li], self.stratum_counts[si], self.stratum_groups[si])
        before = self._cost_of(li, si, *rows)
        label_row, stratum_row, groups_row = (r.copy() for r in rows)
        frm = self.where[gi]
        if frm >= 0:
            label_row[frm] -= group.size
            stratum_row[frm] -= group.size
            groups_row[frm] -= 1
        label_row[to] += group.size
        stratum_row[to] += group.size
        groups_row[to] += 1
        return self._cost_of(li, si, label_row, stratum_row, groups_row) - before

    def move(self, gi: int, to: int) -> None:
        group = self.groups[gi]
        li, si = self._rows(group)
        frm = self.where[gi]
        if frm >= 0:
            self.label_counts[li, frm] -= group.size
            self.stratum_counts[si, frm] -= group.size
            self.stratum_groups[si, frm] -= 1
        self.label_counts[li, to] += group.size
        self.stratum_counts[si, to] += group.size
        self.stratum_groups[si, to] += 1
        self.where[gi] = to


def _greedy(state: _Assignment, order: list[int]) -> None:
    """Biggest groups first, each to the split where it lowers the cost most."""
    for gi in sorted(order, key=lambda i: -state.groups[i].size):
        deltas = [state.delta(gi, s) for s in range(len(state.ratios))]
        state.move(gi, int(np.argmin(deltas)))


def _interchangeable(a: _Group, b: _Group) -> bool:
    """Swapping two groups of the same size and source changes no count."""
    return a.size == b.size and a.source == b.source


def _improve(state: _Assignment, order: list[int]) -> None:
    """Move or swap whole groups (same label) while that lowers the cost; deterministic given ``order``."""
    n_splits = len(state.ratios)
    by_label: dict[str, list[int]] = defaultdict(list)
    for gi in order:
        by_label[state.groups[gi].label].append(gi)
    for _ in range(MAX_PASSES):
        improved = False
        for gi in order:
            deltas = [state.delta(gi, s) if s != state.where[gi] else 0.0 for s in range(n_splits)]
            best = int(np.argmin(deltas))
            if deltas[best] < -1e-9:
                state.move(gi, best)
                improved = True
        for members in by_label.values():
            for a_pos, a in enumerate(members):
                for b in members[a_pos + 1:]:
                    sa, sb = state.where[a], state.where[b]
                    if sa == sb or _interchangeable(state.groups[a], state.groups[b]):
                        continue
                    before_a = state.delta(a, sb)
                    state.move(a, sb)
                    total = before_a + state.delta(b, sa)
                    if total < -1e-9:
                        state.move(b, sa)
                        improved = True
                    else:
                        state.move(a, sa)
        if not improved:
            return


def make_split(clips: list[Clip], seed: int = DEFAULT_SPLIT_SEED,
               ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> dict[str, list[Clip]]:
    """``{"train": [...], "val": [...], "test": [...]}``, whole groups only, same result for the same seed.

    Clips with a ``fixed_split`` (feedback corrections) go to that split and take no part in the balancing, so
    adding them leaves the split of every other clip as it was."""
    if len(ratios) != len(SPLITS) or any(r <= 0 for r in ratios):
        raise ValueError(f"ratios must be {len(SPLITS)} positive numbers, got {ratios}")
    total = float(sum(ratios))
    ratios = tuple(r / total for r in ratios)
    pinned = [c for c in clips if c.fixed_split is not None]
    pinned_groups = {c.group for c in pinned}
    shared = sorted(pinned_groups & {c.group for c in clips if c.fixed_split is None})
    if shared:
        raise ValueError(f"group {shared[0]!r} has clips pinned to a split and others that are not")
    groups = _groups([c for c in clips if c.fixed_split is None])
    state = _Assignment(groups, ratios)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(groups))]
    _greedy(state, order)
    _improve(state, order)
    split: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for gi, group in enumerate(groups):
        split[SPLITS[state.where[gi]]].extend(group.clips)
    for clip in pinned:
        split[clip.fixed_split].append(clip)
    for name in SPLITS:
        split[name].sort(key=lambda c: str(c.path))
    log.info("split (seed %d): %s", seed, {name: len(members) for name, members in split.items()})
    return split


def split_summary(split: dict[str, list[Clip]]) -> dict[str, dict[str, int]]:
    """Clip counts per split for each label and each ``label/source``: for reports and logs."""
    summary: dict[str, dict[str, int]] = {}
    for name, members in split.items():
        counts: Counter[str] = Counter()
        for clip in members:
            counts[clip.label] += 1
            counts[f"{clip.label}/{clip.source}"] += 1
        summary[name] = dict(sorted(counts.items()))
    return summary


def _root(clips: list[Clip]) -> Path:
    """Common folder of the clips: split files store paths relative to it, so they survive moving the data."""
    parents = {str(c.path.parent) for c in clips}
    return Path(os.path.commonpath(sorted(parents)))


def split_file_for(manifest_hash: str) -> Path:
    """One split file per dataset, shared by both training branches and the evaluation."""
    return build_dir() / "splits" / f"split-{manifest_hash[:12]}.json"


def save_split(split: dict[str, list[Clip]], path: Path, seed: int | None = None,
               manifest_hash: str | None = None) -> None:
    all_clips = [c for members in split.values() for c in members]
    root = _root(all_clips)
    doc = {
        "seed": seed,
        "manifest_sha256": manifest_hash,
        "splits": {name: [c.path.relative_to(root).as_posix() for c in members] for name, members in split.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)


def read_split_header(path: Path) -> dict:
    """Seed and manifest hash a split file was made with."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return {"seed": doc.get("seed"), "manifest_sha256": doc.get("manifest_sha256")}


def load_split(path: Path, clips: list[Clip]) -> dict[str, list[Clip]]:
    """The saved split, resolved against ``clips``; a clip named in the file but not in ``clips`` is an error."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        stored = doc["splits"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable split file ({exc})") from None
    root = _root(clips)
    by_rel = {c.path.relative_to(root).as_posix(): c for c in clips}
    split: dict[str, list[Clip]] = {}
    for name in SPLITS:
        missing = [rel for rel in stored.get(name, []) if rel not in by_rel]
        if missing:
            raise ValueError(f"{path}: {len(missing)} clip(s) of split '{name}' are not in the dataset, "
                             f"e.g. {missing[0]}")
        split[name] = [by_rel[rel] for rel in stored.get(name, [])]
    return split


def load_or_make_split(clips: list[Clip], path: Path, seed: int = DEFAULT_SPLIT_SEED,
                       manifest_hash: str | None = None) -> dict[str, list[Clip]]:
    """Reuse the split file when it was made from the same manifest with the same seed, else re-make it."""
    path = Path(path)
    if path.is_file():
        try:
            header = read_split_header(path)
        except ValueError as exc:
            log.warning("re-making split: %s unreadable (%s)", path, exc)
        else:
            if header == {"seed": seed, "manifest_sha256": manifest_hash}:
                return load_split(path, clips)
            log.info("re-making split %s: manifest or seed changed", path)
    split = make_split(clips, seed=seed)
    save_split(split, path, seed=seed, manifest_hash=manifest_hash)
    return split


@dataclass(frozen=True)
class DatasetSplit:
    """A dataset and its saved split: what every trainer, exporter and evaluator starts from."""

    clips: list[Clip]
    split: dict[str, list[Clip]]
    manifest_sha256: str
    split_file: Path


def dataset_split(source: Path, seed: int = DEFAULT_SPLIT_SEED) -> DatasetSplit:
    """Clips of a manifest CSV or label folder, split once per dataset and seed (``split_file_for``)."""
    clips = load_dataset(source)
    digest = manifest_sha256(source)
    path = split_file_for(digest)
    return DatasetSplit(clips, load_or_make_split(clips, path, seed=seed, manifest_hash=digest), digest, path)

"""The operating point, chosen by false alarms per hour the way wake-word engines choose theirs.

``build-models`` runs this after training, so every retrain re-tunes the decision settings for its own models.
Clip accuracy cannot show a rate of one false alarm a day; a long stream can:

- **negative stream**: ``negative_hours`` of household sound made of the *train and val* Normal clips only
  (random order and level, a second sound over the first at times, some clips low-passed as another microphone
  would) and nothing to alert on: every event is a false alarm;
- **positive stream**: *val* cries and screams inserted over *val* backgrounds, clean, at 10 dB and at 0 dB.

No test-split clip is used, so the test-split bench stays an honest check. Both streams are replayed through
the real pipeline with the candidate models (both on every gated window, several processes at once: no cascade and
no carry-over, so the scores are the models' own and the settings are tuned on them), their window scores
recorded, and the sweep (``bench.tradeoff``) re-runs fusion and the tracker for every setting.
The chosen setting has the most recall (of the worse-detected label first) among those within
``max_false_alarms_per_hour`` and ``max_latency_p95_s``; it goes into the model manifest's
``operating_point``, which the runtime uses for every fusion key config.yaml leaves null.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.config import Config, FusionConfig, default_yaml
from monitor.constants import ALERT_LABELS
from monitor.model_manifest import LADDER_BUDGET, describe_recall

from .misses import replayed_miss_causes
from .replay import WorkerPaths, load_window_record, run_worker
from .run import decode_clips, write_planned_stream
from .score import ScoreSpec
from .stream import SourceClip, StreamSpec, read_truth
from .tradeoff import (
    SweepPoint,
    concat_records,
    det_curves,
    most_recall,
    points_to_json,
    recall_by_variant,
    sweep,
    write_plot,
)

log = logging.getLogger(__name__)

NORMAL_LABEL = "Normal"
TUNE_SPLITS = ("train", "val")
"""Where the negative stream's clips come from (the positive stream uses val only)."""
STREAM_VERSION = 2
"""Bump when the stream layout changes, so cached streams are rebuilt."""


@dataclass(frozen=True)
class TuneSpec:
    negative_hours: float = 12.0
    negative_parts: int = 2
    """The negative stream is written and replayed as this many parts, in parallel processes (the last one shorter
    by the positive stream, which its process replays next: ``negative_part_hours``)."""
    positive_hours: float = 2.0
    """Val has ~70 cries and ~10 screams: 2 h re-uses each over other backgrounds and SNRs, so a setting is chosen
    on ~120 insertions, not ~60 (at 1 h the recall of screams moved in steps of 1/14)."""
    max_false_alarms_per_hour: float = 0.1
    max_latency_p95_s: float = 1.5
    min_recall: float = 0.75
    """The worse-detected label's recall at >= 10 dB that the chosen setting must reach: where no setting within
    ``max_false_alarms_per_hour`` does, the false-alarm budget steps up ``budget_steps`` until one does (a monitor
    that misses most cries is no monitor either), and the manifest says so."""
    budget_steps: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    seed: int = 7
    overlap_probability: float = 0.2
    """How often a second household sound starts over the first."""
    background_dbfs: tuple[float, float] = (-50.0, -15.0)
    lowpassed_fraction: float = 0.3
    """Share of the Normal clips that also appear low-passed (another microphone, another room)."""
    lowpass_hz: tuple[float, float] = (2000.0, 3800.0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TuneFiles:
    root: Path

    def negative(self, part: int) -> tuple[Path, Path]:
        return self.root / f"negative_{part}.flac", self.root / f"negative_{part}.json"

    @property
    def positive(self) -> tuple[Path, Path]:
        return self.root / "positive.flac", self.root / "positive.json"

    @property
    def config(self) -> Path:
        return self.root / "tune_config.yaml"

    @property
    def result(self) -> Path:
        return self.root / "tune.json"

    @property
    def plot(self) -> Path:
        return self.root / "det.png"


def negative_part_hours(spec: TuneSpec) -> list[float]:
    """Hours of each negative part, so that every replay process gets the same hours of audio: the last part is
    shorter by the positive stream, which the process that finishes it replays next (equal parts when the
    positive stream is longer than a share)."""
    share = (spec.negative_hours + spec.positive_hours) / spec.negative_parts
    if spec.negative_parts < 2 or share - spec.positive_hours <= 0:
        return [spec.negative_hours / spec.negative_parts] * spec.negative_parts
    return [share] * (spec.negative_parts - 1) + [share - spec.positive_hours]


def lowpassed_variants(pool: list[SourceClip], spec: TuneSpec) -> list[SourceClip]:
    """A low-passed copy of a random share of the clips (named ``<clip>@<cutoff>Hz``)."""
    from training.augment import lowpass

    from .stream import make_source_clip

    rng = np.random.default_rng([spec.seed, 2])
    chosen = [c for c in pool if rng.random() < spec.lowpassed_fraction]
    variants = []
    for clip in chosen:
        cutoff = float(rng.uniform(*spec.lowpass_hz))
        variant = make_source_clip(f"{clip.name}@{cutoff:.0f}Hz", clip.label, lowpass(clip.samples, cutoff),
                                   clip.source)
        if variant is not None:
            variants.append(variant)
    return variants


def _stream_key(clips: list, spec: TuneSpec, cfg: Config, extra: dict) -> str:
    from training.data import clips_signature

    doc = {"version": STREAM_VERSION, "clips": clips_signature(clips), "spec": spec.to_dict(),
           "preprocess": dataclasses.asdict(cfg.preprocess), **extra}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_if_changed(key: str, paths: tuple[Path, Path], make) -> None:
    """Streams are deterministic: one whose key matches the stamp beside it is reused."""
    stamp = paths[0].with_suffix(".key")
    if all(p.is_file() for p in paths) and stamp.is_file() and stamp.read_text() == key:
        log.info("tune stream %s is up to date", paths[0].name)
        return
    make()
    stamp.write_text(key)


def build_streams(split: dict[str, list], cfg: Config, spec: TuneSpec, files: TuneFiles,
                  progress: bool) -> list[tuple[Path, Path]]:
    """The negative parts and the positive stream (written, or reused when unchanged); returns (audio, truth)."""
    files.root.mkdir(parents=True, exist_ok=True)
    normal = [c for name in TUNE_SPLITS for c in split[name] if c.label == NORMAL_LABEL]
    val = list(split["val"])
    streams = []
    pools: dict[str, list[SourceClip]] = {}

    def pool(name: str) -> list[SourceClip]:
        if name not in pools:
            if name == "negative":
                decoded = decode_clips(normal, cfg, progress)
                pools[name] = decoded + lowpassed_variants(decoded, spec)
            else:
                pools[name] = decode_clips(val, cfg, progress)
        return pools[name]

    for part, hours in enumerate(negative_part_hours(spec)):
        paths = files.negative(part)
        stream_spec = StreamSpec(hours=hours, seed=spec.seed + part, label_weights={},
                                 overlap_probability=spec.overlap_probability, background_dbfs=spec.background_dbfs)
        _write_if_changed(_stream_key(normal, spec, cfg, {"part": part}), paths,
                          lambda p=paths, s=stream_spec: write_planned_stream(pool("negative"), s, *p, progress))
        streams.append(paths)
    positive_spec = StreamSpec(hours=spec.positive_hours, seed=spec.seed + spec.negative_parts,
                               background_dbfs=spec.background_dbfs)
    _write_if_changed(_stream_key(val, spec, cfg, {"positive": True}), files.positive,
                      lambda: write_planned_stream(pool("positive"), positive_spec, *files.positive, progress))
    streams.append(files.positive)
    return streams


def replay_streams(streams: list[tuple[Path, Path]], config: Path, workers: int) -> list[dict]:
    """Each stream through the pipeline (both models on every gated window: no cascade, no carry-over), ``workers``
    processes at once."""
    def one(paths: tuple[Path, Path]) -> dict:
        audio = paths[0]
        return run_worker("ours", WorkerPaths(audio, audio.with_suffix(".run.json"),
                                              windows=audio.with_suffix(".windows.npz")), str(config), cascade=False,
                          carry=False)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, streams))


def _best_within(points: list[SweepPoint], budget: float, spec: TuneSpec) -> tuple[SweepPoint | None, bool]:
    """The most recall within ``budget`` false alarms per hour: among the settings within the latency bar when the
    best of those reaches ``min_recall``, else among all; (None, False) when nothing detecting both labels fits.
    The flag: the latency bar is met."""
    quiet = [p for p in points if p.recall_worst > 0 and p.false_alarms_per_hour <= budget]
    if not quiet:
        return None, False
    fast = [p for p in quiet if p.latency_or_inf <= spec.max_latency_p95_s]
    if fast and most_recall(fast).recall_worst >= spec.min_recall:
        return most_recall(fast), True
    best = most_recall(quiet)
    return best, best.latency_or_inf <= spec.max_latency_p95_s


def budget_ladder(points: list[SweepPoint], spec: TuneSpec, live: FusionConfig) -> list[dict]:
    """What each false-alarm budget buys: its best setting's recall and latency, and the fusion settings that
    ``fusion.false_alarm_budget`` selects from the manifest."""
    rows = []
    for budget in (spec.max_false_alarms_per_hour, *spec.budget_steps):
        best, fast = _best_within(points, budget, spec)
        if best is not None:
            rows.append({LADDER_BUDGET: budget, "setting": best.setting.describe(), "meets_latency_bar": fast,
                         "fusion": best.setting.fusion(live).operating_point(), **best.to_dict()})
    return rows


def choose(points: list[SweepPoint], spec: TuneSpec) -> tuple[SweepPoint | None, str]:
    """The most recall (worse-detected label first) within ``max_false_alarms_per_hour`` and the latency bar; the
    latency bar gives way where it would leave the worse label under ``min_recall``, and the false-alarm budget
    steps up ``budget_steps`` where even that is not enough (to the largest step at most). Never a setting deaf to
    a label; without any, the fewest false alarms."""
    budgets = (spec.max_false_alarms_per_hour, *spec.budget_steps)
    chosen, budget, fast = None, None, False
    for budget in budgets:
        chosen, fast = _best_within(points, budget, spec)
        if chosen is not None and chosen.recall_worst >= spec.min_recall:
            break
    if chosen is None:
        if not points:
            return None, "no sweep points"
        return min(points, key=lambda p: (p.false_alarms_per_hour, -p.recall_sum, p.latency_or_inf)), (
            "no setting that detects both labels stays within any false-alarm budget: the fewest false alarms")
    latency = (f"within p95 latency {spec.max_latency_p95_s:g} s" if fast
               else f"no setting that good reaches p95 latency {spec.max_latency_p95_s:g} s")
    if budget == spec.max_false_alarms_per_hour:
        return chosen, f"most recall within {budget:g} false alarms per hour; {latency}"
    reached = "reaches" if chosen.recall_worst >= spec.min_recall else "still does not reach"
    return chosen, (f"within {spec.max_false_alarms_per_hour:g} false alarms per hour no setting catches "
                    f"{spec.min_recall:.0%} of the worse-detected label at >= 10 dB; the smallest budget that does "
                    f"is {budget:g} per hour (this setting {reached} it); {latency}")


def tune_operating_point(split: dict[str, list], staged_manifest: Path, cfg: Config, out_dir: Path,
                         spec: TuneSpec = TuneSpec(), progress: bool = True) -> dict:
    """Streams -> replays with the staged models -> sweep -> the operating point (``{"fusion": {...}, ...}``)."""
    files = TuneFiles(out_dir)
    if not any(c.label in ALERT_LABELS for c in split["val"]):
        log.warning("the val split holds no cry or scream to tune on: the schema's fallback operating point is used")
        result = {"fusion": {}, "chosen": None, "setting": "schema fallbacks", "tuned_on": None, "budget_ladder": [],
                  "reason": "the val split holds no cry or scream to tune the operating point on"}
        files.root.mkdir(parents=True, exist_ok=True)
        files.result.write_text(json.dumps(result, indent=1), encoding="utf-8")
        return result
    streams = build_streams(split, cfg, spec, files, progress)
    tuning_cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, manifest=str(staged_manifest)))
    files.config.write_text(default_yaml(tuning_cfg), encoding="utf-8")
    runs = replay_streams(streams, files.config, workers=spec.negative_parts)
    parts = []
    for (audio, truth), _ in zip(streams, runs, strict=True):
        truths, seconds = read_truth(truth)
        parts.append((load_window_record(audio.with_suffix(".windows.npz")), truths, seconds))
    record, truths, seconds = concat_records(parts)
    live = cfg.fusion.resolve()
    versions = runs[0]["model_versions"]
    points = sweep(record, live, versions, cfg.device_id, truths, seconds, ScoreSpec(), progress,
                   workers=spec.negative_parts)
    chosen, reason = choose(points, spec)
    if chosen is None:
        raise ValueError("the operating-point sweep produced no settings")
    chosen_fusion = chosen.setting.fusion(live)
    fusion = chosen_fusion.operating_point()
    misses = replayed_miss_causes(record, chosen_fusion, truths, seconds, ScoreSpec(), versions, cfg.device_id)
    write_plot(points, chosen, files.plot)
    negative_hours = sum(p[2] for p in parts[:-1]) / 3600.0
    result = {
        "fusion": fusion,
        "chosen": chosen.to_dict(), "setting": chosen.setting.describe(), "reason": reason,
        "budget_ladder": budget_ladder(points, spec, live),
        "recall_by_variant": recall_by_variant(points),
        "miss_causes": misses["by_label_snr"], "misses_unheard_by_audioset": misses["unheard_by_label_snr"],
        "tuned_on": {"hop_seconds": cfg.window.hop_seconds,
                     "negative_hours": round(negative_hours, 3), "positive_hours": round(parts[-1][2] / 3600.0, 3),
                     "splits": {"negative": list(TUNE_SPLITS), "positive": ["val"]},
                     "insertions": {label: sum(t.label == label for t in truths) for label in ALERT_LABELS},
                     "spec": spec.to_dict()},
        "cpu_seconds_per_audio_hour": [r.get("cpu_seconds_per_audio_hour") for r in runs],
        "plot": str(files.plot),
        "det_curves": {family: [p.to_dict() for p in curve] for family, curve in det_curves(points).items()},
    }
    files.result.write_text(json.dumps({**result, **points_to_json(points)}, indent=1),
                            encoding="utf-8")
    log.info("operating point: %s; %.3g false alarms per hour, recall >= 10 dB %s, p95 latency %s s (%s)",
             chosen.setting.describe(), chosen.false_alarms_per_hour, describe_recall(chosen.recall_10db_up),
             chosen.latency_p95_s, reason)
    log.info("where it loses the val insertions it misses (bench.misses): %s", misses["by_label_snr"])
    return result

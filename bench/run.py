"""`nursery-monitor bench`: what a parent feels (missed cries, false alarms, delay) and what it costs, ours
beside the simple approach (a Frigate-style YAMNet detector), on a long realistic stream.

1. **stream** (``bench.stream``): the manifest's test clips become a household stream with cries and screams
   inserted at known times and SNRs: ``DIR/stream.flac`` + ``DIR/truth.json``
   (``nursery-monitor replay DIR/stream.flac`` reproduces it).
2. **replays** (``bench.replay``): ours through the real ``Pipeline`` and the baseline (``bench.baseline``),
   each in a fresh single-threaded process, so wall time, CPU time and peak RSS are theirs alone.
3. **score** (``bench.score``) both the same way; **sweep** (``bench.tradeoff``) the tracker's thresholds over
   the recorded window scores; **profile** (``bench.profile``) a short replay.
4. ``DIR/bench.json``, ``DIR/bench.md`` (``bench.report``), ``DIR/tradeoff.json`` (+ ``.png`` with matplotlib).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from monitor.audiofile import AudioFileError, load_clip
from monitor.command import EXIT_CONFIG, EXIT_OK, add_config_option, fail, load_command_config, setup_logging
from monitor.config import Config, ConfigError, FusionConfig
from monitor.constants import ALERT_LABELS, SAMPLE_RATE, WINDOW_SECONDS
from monitor.model_manifest import ModelError, ModelManifest, configured_manifest_path, read_manifest
from monitor.paths import build_dir, default_manifest_csv
from monitor.progress import progress_bar

from .baseline import BaselineSpec
from .replay import WorkerPaths, audio_progress, load_window_record, run_monitor, run_worker
from .report import check_bars, event_targets, figures, render_markdown
from .score import FALSE_ALARM, DetectedEvent, Score, ScoreSpec, blame, rounded_interval, score_events
from .stream import SourceClip, StreamSpec, make_source_clip, plan_stream, read_background, read_truth, write_stream

log = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0
DEFAULT_PROFILE_SECONDS = 600.0
MERGE_MARGIN_S = 5.0
"""Quiet stretches must exceed every event merge span (hold + cooldown, the baseline's 30 s) by this much."""
SPLITS = ("test", "val", "train", "all")
NEGATIVE_OVERLAP_PROBABILITY = 0.2
"""In the negative-only stream, how often a second household sound starts over the first."""
EPISODE_SECONDS = 30.0
"""``--episode-hours``: each insertion is half a minute of one baby's cries (or screams), not a single clip."""


FILE_NAMES = {"stream": "stream.flac", "truth": "truth.json", "stream_summary": "stream_summary.json",
              "ours": "ours_run.json", "windows": "ours_windows.npz", "ours_full": "ours_full_run.json",
              "windows_full": "ours_full_windows.npz", "monitor": "monitor_events.jsonl",
              "negative_stream": "negative_stream.flac", "negative_truth": "negative_truth.json",
              "negative_run": "negative_run.json", "negative_windows": "negative_windows.npz",
              "episode_stream": "episode_stream.flac", "episode_truth": "episode_truth.json",
              "episode_run": "episode_run.json", "episode_windows": "episode_windows.npz",
              "baseline": "baseline_run.json",
              "profile": "profile.json", "profile_text": "profile.txt", "bench_json": "bench.json",
              "bench_md": "bench.md", "tradeoff_json": "tradeoff.json", "tradeoff_png": "tradeoff.png"}


@dataclass(frozen=True)
class BenchFiles:
    """The report folder's layout."""

    root: Path
    stream: Path
    truth: Path
    stream_summary: Path
    ours: Path
    windows: Path
    ours_full: Path
    windows_full: Path
    monitor: Path
    negative_stream: Path
    negative_truth: Path
    negative_run: Path
    negative_windows: Path
    episode_stream: Path
    episode_truth: Path
    episode_run: Path
    episode_windows: Path
    baseline: Path
    profile: Path
    profile_text: Path
    bench_json: Path
    bench_md: Path
    tradeoff_json: Path
    tradeoff_png: Path

    @classmethod
    def under(cls, root: Path) -> BenchFiles:
        return cls(root=root, **{name: root / file_name for name, file_name in FILE_NAMES.items()})


# --- the stream ------------------------------------------------------------------------------------

def select_clips(manifest: Path, split: str) -> list:
    """Clips of ``split`` (the grouped split training used, found by the manifest's hash), or all of them."""
    from training.data import load_dataset
    from training.split import dataset_split

    if split == "all":
        return load_dataset(manifest)
    chosen = dataset_split(manifest).split[split]
    if not chosen:
        raise ValueError(f"{manifest}: the '{split}' split is empty (try --split all)")
    return chosen


def decode_clips(clips: list, cfg: Config, progress: bool) -> list[SourceClip]:
    """Each clip through the runtime's conditioning chain (16 kHz); unreadable or silent clips are skipped."""
    pool: list[SourceClip] = []
    for clip in progress_bar(clips, desc="decoding clips", unit="clip", enabled=progress):
        try:
            samples = load_clip(clip.path, cfg.preprocess)
        except AudioFileError as exc:
            log.warning("skipping %s", exc)
            continue
        source = make_source_clip(clip.path.name, clip.label, samples, clip.source, clip.group)
        if source is None:
            log.warning("skipping %s: no sound above the activity floor", clip.path)
            continue
        pool.append(source)
    return pool


def check_spacing(spec: StreamSpec, fusion: FusionConfig, baseline: BaselineSpec) -> None:
    """Insertions must lie further apart than any span over which a tracker merges sound into one event."""
    merge_span = max(fusion.hold_seconds + fusion.cooldown_seconds, baseline.max_not_heard_s)
    if spec.quiet_s[0] < merge_span + MERGE_MARGIN_S:
        log.warning("quiet stretches from %.0f s are shorter than the event merge span %.0f s + %.0f s: "
                    "neighbouring insertions may merge into one event", spec.quiet_s[0], merge_span, MERGE_MARGIN_S)


class SplitClips:
    """The split's clips, decoded once when a stream first needs them: the insertion, negative-only and episode
    streams are all built from them."""

    def __init__(self, manifest: Path, split: str, cfg: Config, progress: bool):
        self.manifest, self.split, self.cfg, self.progress = manifest, split, cfg, progress
        self._pool: list[SourceClip] | None = None

    def pool(self) -> list[SourceClip]:
        if self._pool is None:
            self._pool = decode_clips(select_clips(self.manifest, self.split), self.cfg, self.progress)
        return self._pool


def build_stream(clips: SplitClips, spec: StreamSpec, stream: Path, truth: Path) -> dict:
    pool = clips.pool()
    return write_planned_stream(pool, spec, stream, truth, clips.progress) | {
        "manifest": str(clips.manifest), "split": clips.split, "clips_decoded": len(pool),
        "clips_by_label": {label: sum(c.label == label for c in pool) for label in ("Normal", *ALERT_LABELS)}}


def write_planned_stream(pool: list[SourceClip], spec: StreamSpec, stream: Path, truth: Path, progress: bool) -> dict:
    """Plan and write one stream from decoded clips; returns its summary."""
    plan = plan_stream(pool, spec)
    with audio_progress(plan.seconds, f"writing {stream.name}", enabled=progress) as bar:
        write_stream(plan, pool, stream, truth, progress=lambda n: bar.update(n / SAMPLE_RATE))
    summary = {**plan.summary(), "spec": spec.to_dict()}
    log.info("%s: %.2f h, %d insertions %s", stream.name, summary["hours"], summary["insertions"],
             summary["insertions_by_label_snr"])
    return summary


# --- scoring ---------------------------------------------------------------------------------------

def decision_span_s(cfg: Config, fusion: FusionConfig) -> float:
    """Audio the tracker has heard when it raises an event: its n windows."""
    return WINDOW_SECONDS + (fusion.n_windows - 1) * cfg.window.hop_seconds


def _score(truths, run: dict, stream_seconds: float, spec: ScoreSpec):
    return score_events(truths, [DetectedEvent.from_dict(e) for e in run["events"]], stream_seconds, spec)


def _tradeoff(files: BenchFiles, cfg: Config, fusion: FusionConfig, ours_run: dict, full_run: dict,
              baseline: dict | None, truths, stream_seconds: float, spec: ScoreSpec, progress: bool) -> dict:
    """The sweep over the full record (Wav2Vec2 on every gated window, so every fusion can be re-run)."""
    from .tradeoff import (
        decision_ceiling,
        det_curves,
        pareto_frontier,
        points_to_json,
        recall_by_variant,
        recommend,
        replay_tracker,
        sweep,
        write_plot,
    )

    record = load_window_record(files.windows_full)
    versions = ours_run["model_versions"]
    points = sweep(record, fusion, versions, cfg.device_id, truths, stream_seconds, spec, progress)
    again = replay_tracker(record, fusion, versions, cfg.device_id, stream_seconds)
    live_again = replay_tracker(load_window_record(files.windows), fusion, versions, cfg.device_id, stream_seconds)
    targets = event_targets()
    chosen, reason = recommend(points, targets, baseline["false_alarms_per_hour"] if baseline else None)
    plotted = write_plot(points, chosen, files.tradeoff_png)
    tradeoff = {"file": files.tradeoff_json.name, "plot": files.tradeoff_png.name if plotted else None,
                "reproduces_live": ([e.to_dict() for e in again] == full_run["events"]
                                    and [e.to_dict() for e in live_again] == ours_run["events"]),
                "recommended": chosen.to_dict() if chosen else None,
                "recommended_text": chosen.setting.describe() if chosen else None, "reason": reason,
                "frontier": [p.to_dict() for p in pareto_frontier(points)],
                "recall_by_variant": recall_by_variant(points),
                "ceiling": decision_ceiling(points, targets),
                "det_curves": {family: [p.to_dict() for p in curve] for family, curve in det_curves(points).items()}}
    files.tradeoff_json.write_text(json.dumps({**tradeoff, **points_to_json(points)}, indent=1),
                                   encoding="utf-8")
    return tradeoff


def _sensitivity(files: BenchFiles, cfg: Config, fusion: FusionConfig, runs: Runs, truths, stream_seconds: float,
                 spec: ScoreSpec) -> dict | None:
    """Every tuned false-alarm budget (``fusion.false_alarm_budget``) on this bench's streams: the full record and,
    when replayed, the negative-only one (recorded with the cascade); with episodes, also the episode stream joined
    with the negative-only one, which is what a parent choosing a sensitivity wants to know: how many sustained
    cries each budget catches, for how many alarms a night."""
    ladder = _manifest(cfg).budget_ladder
    if not ladder:
        return None
    negative = [(load_window_record(files.negative_windows), *read_truth(files.negative_truth))] if runs.negative \
        else []
    versions = runs.ours["model_versions"]
    doc = _ladder_on(ladder, [(load_window_record(files.windows_full), truths, stream_seconds), *negative], fusion,
                     versions, cfg.device_id, spec)
    if runs.episodes:
        episodes = (load_window_record(files.episode_windows), *read_truth(files.episode_truth))
        doc["episodes"] = _ladder_on(ladder, [episodes, *negative], fusion, versions, cfg.device_id, spec)
    return doc


def _ladder_on(ladder: list[dict], parts: list, fusion: FusionConfig, versions: dict[str, str], device_id: str,
               spec: ScoreSpec) -> dict:
    """The budget ladder measured on recorded streams joined into one."""
    from .tradeoff import concat_records, ladder_on_stream

    record, all_truths, seconds = concat_records(parts)
    rows = ladder_on_stream(record, fusion, ladder, versions, device_id, all_truths, seconds, spec)
    return {"hours": round(seconds / SECONDS_PER_HOUR, 3), "streams": len(parts), "rows": rows}


def _false_alarms(score: Score, background: list, lookback_s: float) -> tuple[dict[str, dict], list[dict]]:
    """False alarms by the source of what was sounding when they were raised (with how many distinct clips: the
    background pool is small and reused, so a few clips can make many alarms), and the list with the clip."""
    events = [o.event for o in score.outcomes if o.kind == FALSE_ALARM]
    source_of = {b.clip: b.source or b.clip for b in background}
    clips = blame(events, [(b.start_s, b.end_s, b.clip) for b in background], lookback_s)
    by_source: dict[str, dict] = {}
    for clip, count in Counter(clips).most_common():
        entry = by_source.setdefault(source_of.get(clip, clip), {"alarms": 0, "clips": 0})
        entry["alarms"] += count
        entry["clips"] += 1
    listed = [{**e.to_dict(), "sounding": clip} for e, clip in zip(events, clips, strict=True)]
    return by_source, listed


@dataclass
class Runs:
    """What the bench replayed: ours as configured, ours with Wav2Vec2 on every gated window (the record the sweep
    needs, and the cascade's reference), the monitor process alone (its memory), the baseline, the profile and
    the negative-only stream."""

    ours: dict
    full: dict
    monitor: dict | None = None
    baseline: dict | None = None
    profile: dict | None = None
    negative: dict | None = None
    episodes: dict | None = None


def _cascade_figures(ours_score: Score, full_score: Score, ours_run: dict, full_run: dict) -> dict:
    """The cascade against Wav2Vec2 on every gated window: CPU both ways, and how many events differ."""
    ours_events = {(e["label"], e["raised_s"]) for e in ours_run["events"]}
    full_events = {(e["label"], e["raised_s"]) for e in full_run["events"]}
    return {"cpu_seconds_per_audio_hour": ours_run.get("cpu_seconds_per_audio_hour"),
            "cpu_seconds_per_audio_hour_without": full_run.get("cpu_seconds_per_audio_hour"),
            "wav2vec2_skipped_windows": ours_run.get("wav2vec2_skipped_windows"),
            "gated_windows": ours_run.get("gated_windows"),
            "carried_windows": ours_run.get("carried_windows"),
            "events_differing": len(ours_events ^ full_events),
            "false_alarms": [ours_score.false_alarms, full_score.false_alarms],
            "hits": [sum(ours_score.truth_hit), sum(full_score.truth_hit)]}


def _negative_figures(files: BenchFiles, cfg: Config, fusion: FusionConfig, run: dict) -> dict:
    truths, seconds = read_truth(files.negative_truth)
    score = _score(truths, run, seconds, ScoreSpec())
    by_source, _ = _false_alarms(score, read_background(files.negative_truth), decision_span_s(cfg, fusion))
    return {"hours": round(seconds / SECONDS_PER_HOUR, 3), "false_alarms": score.false_alarms,
            "false_alarms_per_hour": round(score.false_alarms_per_hour, 4),
            "false_alarms_per_hour_interval": rounded_interval(score.false_alarms_per_hour_interval),
            "false_alarms_by_source": by_source,
            "cpu_seconds_per_audio_hour": run.get("cpu_seconds_per_audio_hour"),
            "wav2vec2_skipped_windows": run.get("wav2vec2_skipped_windows"), "gated_windows": run.get("gated_windows"),
            "carried_windows": run.get("carried_windows"), "vetoed_windows": run.get("vetoed_windows")}


def _misses(windows: Path, cfg: Config, fusion: FusionConfig, score: Score, spec: ScoreSpec,
            versions: dict[str, str]) -> dict:
    """The missed insertions, each with the stage that lost it (``bench.misses``) when the stream's live window
    record is there, and their counts per label, SNR and cause."""
    from .misses import miss_causes

    if not windows.is_file():
        return {"misses": [t.to_dict() for t, hit in zip(score.truths, score.truth_hit, strict=True) if not hit]}
    return miss_causes(load_window_record(windows), fusion, score, spec, versions, cfg.device_id)


def _episode_figures(files: BenchFiles, cfg: Config, fusion: FusionConfig, run: dict) -> dict:
    """Episodes: did the alarm come while the baby was still crying, how long after it began, and where the
    missed ones were lost."""
    truths, seconds = read_truth(files.episode_truth)
    spec = ScoreSpec()
    score = _score(truths, run, seconds, spec)
    scored = figures(score, run)
    missed = _misses(files.episode_windows, cfg, fusion, score, spec, run["model_versions"])
    return {"miss_causes": missed.get("by_label_snr"), "misses_unheard_by_audioset": missed.get("unheard_by_label_snr"),
            "hours": round(seconds / SECONDS_PER_HOUR, 3),
            "episode_seconds": EPISODE_SECONDS,
            "episodes": len(truths), **{key: scored[key] for key in (
                "recall_10db_up", "recall_by_snr", "alert_recall_any_label", "latency_p50_s", "latency_p95_s",
                "false_alarms", "false_alarms_per_hour", "false_alarms_per_hour_interval", "recall_10db_up_interval",
                "duplicates", "label_confusions")},
            "latency_by_label": {label: {key: figs.get(key) for key in ("latency_p50_s", "latency_p95_s")}
                                 for label, figs in scored["per_label"].items()}}


def evaluate(files: BenchFiles, cfg: Config, fusion: FusionConfig, runs: Runs, stream_summary: dict,
             progress: bool) -> dict:
    """Score both systems, sweep the thresholds, write bench.json and bench.md; returns the document."""
    truths, stream_seconds = read_truth(files.truth)
    background = read_background(files.truth)
    spec = ScoreSpec()
    ours_score = _score(truths, runs.ours, stream_seconds, spec)
    ours = figures(ours_score, runs.ours)
    ours["vetoed_windows"] = runs.ours.get("vetoed_windows")
    ours["false_alarms_by_source"], ours_false_alarms = _false_alarms(ours_score, background,
                                                                      decision_span_s(cfg, fusion))
    ours["cascade"] = _cascade_figures(ours_score, _score(truths, runs.full, stream_seconds, spec), runs.ours,
                                       runs.full)
    missed = _misses(files.windows, cfg, fusion, ours_score, spec, runs.ours["model_versions"])
    ours["miss_causes"] = missed.get("by_label_snr")
    ours["misses_unheard_by_audioset"] = missed.get("unheard_by_label_snr")
    if runs.monitor:
        ours["monitor_peak_rss_mb"] = runs.monitor["peak_rss_mb"]
        ours["monitor"] = runs.monitor
    if runs.negative:
        ours["negative_stream"] = _negative_figures(files, cfg, fusion, runs.negative)
    if runs.episodes:
        ours["episodes"] = _episode_figures(files, cfg, fusion, runs.episodes)
    baseline = None
    if runs.baseline:
        baseline_score = _score(truths, runs.baseline, stream_seconds, spec)
        baseline = figures(baseline_score, runs.baseline)
        baseline["false_alarms_by_source"], _ = _false_alarms(baseline_score, background, WINDOW_SECONDS)
    doc = {"ours": ours, "baseline": baseline, "stream": stream_summary,
           "config": {"fusion": dataclasses.asdict(fusion), "gate": dataclasses.asdict(cfg.gate),
                      "window": dataclasses.asdict(cfg.window), "models": dataclasses.asdict(cfg.models),
                      "score": dataclasses.asdict(spec), "baseline": BaselineSpec().to_dict()},
           "bars": check_bars(ours, baseline, stream_seconds / SECONDS_PER_HOUR),
           "misses": missed["misses"],
           "false_alarm_events": ours_false_alarms,
           "profile": {**runs.profile, "file": files.profile_text.name} if runs.profile else None}
    if files.windows_full.is_file():
        doc["tradeoff"] = _tradeoff(files, cfg, fusion, runs.ours, runs.full, baseline, truths, stream_seconds, spec,
                                    progress)
        doc["sensitivity"] = _sensitivity(files, cfg, fusion, runs, truths, stream_seconds, spec)
    files.bench_json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    files.bench_md.write_text(render_markdown(doc), encoding="utf-8")
    return doc


# --- command line ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery-monitor bench",
        description="Event-level benchmark: a long household stream with cries and screams at known times, through "
                    "the pipeline and a Frigate-style baseline; writes DIR/bench.json and DIR/bench.md.")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="manifest CSV with the shared columns, or a <label>/ folder tree (default: shared data)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="clips that build the stream (default: the test split, unseen in training)")
    parser.add_argument("--hours", type=float, default=StreamSpec.hours, help="stream length (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=StreamSpec.seed, help="stream layout seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: build/reports/bench)")
    add_config_option(parser)
    parser.add_argument("--profile-seconds", type=float, default=DEFAULT_PROFILE_SECONDS,
                        help="audio to profile with pyinstrument; 0 = no profile (default: %(default)s)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline replay")
    parser.add_argument("--reuse-stream", action="store_true",
                        help="replay the stream already in DIR instead of generating it again")
    parser.add_argument("--negative-hours", type=float, default=0.0,
                        help="also replay a negative-only stream this long (the split's Normal clips, two at once at "
                             "times): false alarms per hour where nothing should alert (default: none)")
    parser.add_argument("--episode-hours", type=float, default=0.0,
                        help=f"also replay a stream this long whose insertions are {EPISODE_SECONDS:g} s episodes of "
                             "one recording's cries or screams, as a baby cries for a while rather than for one clip: "
                             "is the alarm raised while it lasts, and how soon (default: none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (nor progress lines off a terminal)")
    return parser


def _manifest(cfg: Config) -> ModelManifest:
    return read_manifest(configured_manifest_path(cfg))


def _resolved_fusion(cfg: Config) -> FusionConfig:
    """The fusion settings the monitor will use: the config's, null ones from the models' operating point. Also
    fails before minutes are spent on the stream when the models are not built."""
    return cfg.fusion.resolve(_manifest(cfg).operating_point_for(cfg.fusion.false_alarm_budget))


def _stream(args: argparse.Namespace, cfg: Config, files: BenchFiles, clips: SplitClips) -> dict:
    if args.reuse_stream and files.stream_summary.is_file() and files.stream.is_file() and files.truth.is_file():
        return json.loads(files.stream_summary.read_text(encoding="utf-8"))
    spec = StreamSpec(hours=args.hours, seed=args.seed)
    check_spacing(spec, cfg.fusion.resolve(), BaselineSpec())
    summary = build_stream(clips, spec, files.stream, files.truth)
    files.stream_summary.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _negative_stream(args: argparse.Namespace, files: BenchFiles, clips: SplitClips) -> dict:
    """``--negative-hours``: household sound of the split's Normal clips only, nothing to alert on."""
    spec = StreamSpec(hours=args.negative_hours, seed=args.seed + 1, label_weights={},
                      overlap_probability=NEGATIVE_OVERLAP_PROBABILITY)
    normal = [c for c in clips.pool() if c.label == "Normal"]
    write_planned_stream(normal, spec, files.negative_stream, files.negative_truth, not args.quiet)
    return run_worker("ours", WorkerPaths(files.negative_stream, files.negative_run, windows=files.negative_windows),
                      args.config, show_progress=not args.quiet)


def _episode_stream(args: argparse.Namespace, files: BenchFiles, clips: SplitClips) -> dict:
    """``--episode-hours``: the split's clips, each insertion an episode of one recording (``StreamSpec.episode_s``)."""
    spec = StreamSpec(hours=args.episode_hours, seed=args.seed + 2, episode_s=EPISODE_SECONDS)
    write_planned_stream(clips.pool(), spec, files.episode_stream, files.episode_truth, not args.quiet)
    return run_worker("ours", WorkerPaths(files.episode_stream, files.episode_run, windows=files.episode_windows),
                      args.config, show_progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO")
    files = BenchFiles.under((args.out or build_dir() / "reports" / "bench").resolve())
    cfg = load_command_config("nursery-monitor bench", args.config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        if args.hours <= 0 or args.negative_hours < 0 or args.episode_hours < 0:
            raise ValueError(f"--hours must be positive, --negative-hours and --episode-hours not negative, got "
                             f"{args.hours}, {args.negative_hours}, {args.episode_hours}")
        fusion = _resolved_fusion(cfg)
        files.root.mkdir(parents=True, exist_ok=True)
        clips = SplitClips((args.manifest or default_manifest_csv()).resolve(), args.split, cfg, not args.quiet)
        stream_summary = _stream(args, cfg, files, clips)
        show = not args.quiet
        runs = Runs(ours=run_worker("ours", WorkerPaths(files.stream, files.ours, windows=files.windows), args.config,
                                    show_progress=show),
                    full=run_worker("ours", WorkerPaths(files.stream, files.ours_full, windows=files.windows_full),
                                    args.config, show_progress=show, cascade=False),
                    monitor=run_monitor(files.stream, files.monitor, args.config))
        if not args.no_baseline:
            runs.baseline = run_worker("baseline", WorkerPaths(files.stream, files.baseline), args.config,
                                       show_progress=show)
        if args.profile_seconds > 0:
            runs.profile = run_worker("profile", WorkerPaths(files.stream, files.profile,
                                                             profile_text=files.profile_text),
                                      args.config, args.profile_seconds, show_progress=show)
        if args.negative_hours > 0:
            runs.negative = _negative_stream(args, files, clips)
        if args.episode_hours > 0:
            runs.episodes = _episode_stream(args, files, clips)
        doc = evaluate(files, cfg, fusion, runs, stream_summary, progress=show)
    except (ConfigError, ModelError, ValueError, AudioFileError, RuntimeError, OSError) as exc:
        return fail("nursery-monitor bench", exc)
    print(render_markdown(doc))
    print(f"written: {files.bench_json} and {files.bench_md}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

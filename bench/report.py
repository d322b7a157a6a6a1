"""The issue's figures per system, the bars they are held to, and the side-by-side markdown table."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.constants import ALERT_LABELS, AUDIOSET_HEARS_ALERT
from monitor.model_manifest import LADDER_BUDGET

from .misses import CAUSES
from .score import Score, hours_to_show, round_or_none, rounded_interval
from .tradeoff import MIN_SNR_DB, Targets


@dataclass(frozen=True)
class Bar:
    figure: str
    """Dotted key into a system's figures."""
    limit: float
    higher_is_better: bool

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.limit if self.higher_is_better else value <= self.limit

    @property
    def text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.limit:g}"


FALSE_ALARM_BAR = Bar("false_alarms_per_hour", 0.5, False)
"""On the test-split stream with insertions (issue 11)."""
BARS = (
    FALSE_ALARM_BAR,
    Bar("recall_10db_up.Crying", 0.95, True),
    Bar("recall_10db_up.Screaming", 0.90, True),
    Bar("latency_p95_s", 1.5, False),
    Bar("negative_stream.false_alarms_per_hour", 0.1, False),
    Bar("rtf", 0.02, False),
    Bar("monitor_peak_rss_mb", 200.0, False),
    Bar("cascade.cpu_seconds_per_audio_hour", 20.0, False),
)
RECALL_BAR_PREFIX = "recall_10db_up."
LATENCY_BAR = "latency_p95_s"
MIN_STREAM_HOURS = 2.0
"""The bars are judged on at least this much stream."""

MEASUREMENT_KEYS = ("rtf", "cpu_rtf", "cpu_seconds_per_audio_hour", "peak_rss_mb", "gate_pass_fraction",
                    "inference_ms_per_window", "model_versions", "heavy_modules_loaded", "threads", "windows",
                    "gated_windows", "wall_seconds", "cpu_seconds", "audio_seconds", "model_load_seconds")


def figures(score: Score, run: dict) -> dict:
    """One system's figures: event scores from the scorer, cost measurements from its replay."""
    summary = score.to_dict()
    return {
        "event_recall": summary["event_recall"],
        "event_precision": summary["event_precision"],
        "recall_10db_up": {label: round_or_none(score.recall(label, MIN_SNR_DB)) for label in ALERT_LABELS},
        "recall_10db_up_interval": {label: rounded_interval(score.recall_interval(label, MIN_SNR_DB))
                                    for label in ALERT_LABELS},
        "recall_by_snr": {label: s["recall_by_snr"] for label, s in summary["per_label"].items()},
        "alert_recall_any_label": summary["alert_recall_any_label"],
        **{key: summary[key] for key in ("false_alarms", "false_alarms_per_hour", "label_confusions", "duplicates",
                                         "latency_p50_s", "latency_p95_s")},
        "false_alarms_per_hour_interval": rounded_interval(score.false_alarms_per_hour_interval),
        **{key: run.get(key) for key in MEASUREMENT_KEYS},
        "per_label": summary["per_label"],
    }


def event_targets() -> Targets:
    """The bars that depend on the fusion / tracker settings, for the threshold sweep."""
    by_figure = {bar.figure: bar.limit for bar in BARS}
    return Targets(false_alarms_per_hour=FALSE_ALARM_BAR.limit, latency_p95_s=by_figure[LATENCY_BAR],
                   recall_10db_up={figure.removeprefix(RECALL_BAR_PREFIX): limit for figure, limit in by_figure.items()
                                   if figure.startswith(RECALL_BAR_PREFIX)})


def lookup(figs: dict | None, dotted: str):
    value = figs
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_bars(ours: dict, baseline: dict | None, stream_hours: float) -> dict[str, dict]:
    checks = {}
    for bar in BARS:
        value = lookup(ours, bar.figure)
        checks[bar.figure] = {"limit": bar.limit, "value": value, "met": bar.met(value)}
    if baseline is not None:
        ours_rate, base_rate = ours["false_alarms_per_hour"], baseline["false_alarms_per_hour"]
        checks["false_alarms_below_baseline"] = {"value": ours_rate, "limit": base_rate,
                                                 "met": ours_rate < base_rate or ours_rate == base_rate == 0}
    heavy = ours.get("heavy_modules_loaded")
    checks["no_torch_or_tensorflow"] = {"value": heavy, "met": None if heavy is None else not heavy}
    checks["stream_hours"] = {"value": round(stream_hours, 3), "limit": MIN_STREAM_HOURS,
                              "met": round(stream_hours, 3) >= MIN_STREAM_HOURS}
    return checks


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list) and value and all(isinstance(v, float | int) for v in value):
        return f"[{', '.join(fmt(float(v)) for v in value)}]"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


ROWS = (
    ("event recall, Crying (all SNRs)", "event_recall.Crying"),
    ("event recall, Screaming (all SNRs)", "event_recall.Screaming"),
    ("event recall, Crying (>= 10 dB)", "recall_10db_up.Crying"),
    ("event recall, Screaming (>= 10 dB)", "recall_10db_up.Screaming"),
    ("event recall at >= 10 dB, 95% interval (Wilson)", "recall_10db_up_interval"),
    ("event precision, Crying", "event_precision.Crying"),
    ("event precision, Screaming", "event_precision.Screaming"),
    ("cry/scream alerted with either label", "alert_recall_any_label"),
    ("false alarms", "false_alarms"),
    ("false alarms per hour", "false_alarms_per_hour"),
    ("false alarms per hour, 95% interval (Poisson)", "false_alarms_per_hour_interval"),
    ("label confusions", "label_confusions"),
    ("duplicate alerts", "duplicates"),
    ("latency p50 (s)", "latency_p50_s"),
    ("latency p95 (s)", "latency_p95_s"),
    ("rtf (wall s per audio s, 1 thread)", "rtf"),
    ("CPU s per audio hour", "cpu_seconds_per_audio_hour"),
    ("CPU s per audio hour without the cascade", "cascade.cpu_seconds_per_audio_hour_without"),
    ("events differing, cascade vs Wav2Vec2 on every window", "cascade.events_differing"),
    ("Wav2Vec2 windows skipped by the cascade", "cascade.wav2vec2_skipped_windows"),
    ("gated windows that reused the previous window's outputs (no model ran)", "cascade.carried_windows"),
    ("the monitor's peak RSS (MB), `nursery-monitor replay` alone", "monitor_peak_rss_mb"),
    ("benchmark worker peak RSS (MB, holds the window record)", "peak_rss_mb"),
    ("negative-only stream: hours", "negative_stream.hours"),
    ("negative-only stream: false alarms per hour", "negative_stream.false_alarms_per_hour"),
    ("negative-only stream: false alarms per hour, 95% interval", "negative_stream.false_alarms_per_hour_interval"),
    ("negative-only stream: CPU s per audio hour", "negative_stream.cpu_seconds_per_audio_hour"),
    ("episodes (one recording's cries or screams in a row): how many", "episodes.episodes"),
    ("episodes: length (s)", "episodes.episode_seconds"),
    ("episodes: recall at >= 10 dB, Crying / Screaming", "episodes.recall_10db_up"),
    ("episodes: alerted with either label (all SNRs)", "episodes.alert_recall_any_label"),
    ("episodes: latency p50 from the episode's start (s)", "episodes.latency_p50_s"),
    ("episodes: latency p95 (s)", "episodes.latency_p95_s"),
    ("episodes: false alarms per hour between them", "episodes.false_alarms_per_hour"),
    ("windows AudioSet's vetoes (laughter, cat, animal) kept from alerting", "vetoed_windows"),
    ("negative-only stream: windows vetoed", "negative_stream.vetoed_windows"),
    ("gate pass fraction", "gate_pass_fraction"),
    ("inference ms per window", "inference_ms_per_window"),
    ("torch / tensorflow imported", "heavy_modules_loaded"),
    ("model versions", "model_versions"),
)


def _header(doc: dict) -> list[str]:
    stream, base = doc["stream"], doc["config"]["baseline"]
    return [
        "# Event-level benchmark", "",
        f"Stream: {stream['hours']:.2f} h from `{stream['manifest']}` ({stream['split']} split, "
        f"{stream['clips_decoded']} clips), seed {stream['spec']['seed']}, {stream['insertions']} insertions "
        f"({fmt(stream['insertions_by_label_snr'])}). Ours: the live pipeline in replay mode, 1 thread. "
        f"Baseline: YAMNet's AudioSet scores on non-overlapping 0.975 s chunks, threshold {base['threshold']:g}, "
        f"RMS floor {base['min_volume_int16']:g} on int16 ({base['min_volume_dbfs']:g} dBFS), events end after "
        f"{base['max_not_heard_s']:g} s unheard (Frigate's audio defaults).",
        f"An event is judged where it was raised: within [onset - {doc['config']['score']['tolerance_before_s']:g} s, "
        f"offset + {doc['config']['score']['tolerance_after_s']:g} s] of an insertion of its label it is a hit; "
        "outside every insertion a false alarm (per hour of stream outside the insertions). Latency = raised - onset.",
        "",
    ]


def _main_table(doc: dict) -> list[str]:
    ours, baseline = doc["ours"], doc.get("baseline")
    bars = {b.figure: b for b in BARS}
    lines = ["| figure | ours | baseline | bar | ours meets bar |", "|---|---|---|---|---|"]
    for name, key in ROWS:
        bar = bars.get(key)
        met = doc["bars"].get(key, {}).get("met")
        lines.append(f"| {name} | {fmt(lookup(ours, key))} | {fmt(lookup(baseline, key))} | "
                     f"{bar.text if bar else '-'} | {fmt(met) if bar else '-'} |")
    others = "; ".join(f"{k}: {fmt(v.get('met'))}" for k, v in doc["bars"].items() if k not in bars)
    return lines + ["", f"Other bars: {others}.", "", *_interval_note()]


def _interval_note() -> list[str]:
    """What the streams' length can show: a count under a rate bar is not yet evidence of the rate."""
    rate_bars = [bar for bar in BARS if bar.figure.endswith("false_alarms_per_hour")]
    shown = ", ".join(f"{bar.limit:g} per hour after {hours_to_show(bar.limit):.1f} h" for bar in rate_bars)
    return ["Intervals are 95%: exact Poisson for false-alarm rates, Wilson for recalls. Alarms over one recurring "
            "background clip and insertions of one clip at three SNRs are not independent, so the true uncertainty "
            "is wider. With no false alarm at all, the interval's top reaches " + shown + " of stream: a shorter "
            "stream can meet such a bar by its count but cannot show it.", ""]


def _snr_table(doc: dict) -> list[str]:
    ours, baseline = doc["ours"], doc.get("baseline")
    lines = ["## Recall and latency per SNR", "",
             "| label | SNR | insertions | recall ours | recall baseline | latency p50 / p95 ours (s) |",
             "|---|---|---|---|---|---|"]
    for label, per_snr in ours["recall_by_snr"].items():
        counts = ours["per_label"][label]["truths_by_snr"]
        latency = ours["per_label"][label].get("latency_by_snr", {})
        for key, value in per_snr.items():
            p50, p95 = (latency.get(key, {}).get(f"latency_p{p}_s") for p in (50, 95))
            lines.append(f"| {label} | {key} | {counts.get(key)} | {fmt(value)} | "
                         f"{fmt(lookup(baseline, f'recall_by_snr.{label}.{key}'))} | {fmt(p50)} / {fmt(p95)} |")
    return lines + [""]


def _miss_table(doc: dict) -> list[str]:
    """Missed insertions (and crying episodes) per label and SNR by the stage that lost them (``bench.misses``)."""
    episodes = doc["ours"].get("episodes") or {}
    streams = [("single clips", doc["ours"].get("miss_causes") or {}, doc["ours"].get("misses_unheard_by_audioset")),
               ("30 s episodes", episodes.get("miss_causes") or {}, episodes.get("misses_unheard_by_audioset"))]
    rows = [(stream, label, snr, causes, lookup(unheard or {}, f"{label}.{snr}"))
            for stream, by_label, unheard in streams for label, per_snr in by_label.items()
            for snr, causes in per_snr.items()]
    if not rows:
        return []
    lines = ["## Where the missed insertions were lost", "",
             "Each miss put down to the first of: open_event = an alarm raised before it began was still on; "
             "other_label = an alarm was raised on it with the other label; gate = no window of it passed the gate; "
             "then the live windows replayed with the stages relaxed one more at a time, and the first that catches "
             "it: veto = AudioSet's vetoes off; vote = the vote off too; k_of_n = one alerting window enough too; "
             "threshold = still missed (the fused probability stayed under the enter threshold). Unheard by "
             f"AudioSet = of those misses, the ones whose windows AudioSet scored under {AUDIOSET_HEARS_ALERT:g} as a "
             "cry or scream throughout (hard cases or doubtful labels: `nursery-monitor audit-labels`). Each miss of "
             "the single-clip stream, with the best fused alert probability and AudioSet score its windows reached: "
             "`misses` in bench.json.", "",
             f"| stream | label | SNR | missed | {' | '.join(CAUSES)} | unheard by AudioSet |",
             "|---|---|---|---|" + "---|" * (len(CAUSES) + 1)]
    lines += [f"| {stream} | {label} | {snr} | {sum(causes.values())} | "
              + " | ".join(str(causes.get(cause, 0)) for cause in CAUSES) + f" | {fmt(unheard)} |"
              for stream, label, snr, causes, unheard in rows]
    return lines + [""]


def _false_alarm_table(doc: dict) -> list[str]:
    ours, baseline = doc["ours"].get("false_alarms_by_source", {}), (doc.get("baseline") or {}).get(
        "false_alarms_by_source", {})
    sources = list(dict.fromkeys([*ours, *baseline]))
    if not sources:
        return []

    def cell(entry: dict | None) -> str:
        return f"{entry['alarms']} ({entry['clips']} clips)" if entry else "0"

    lines = ["## What was sounding when a false alarm was raised", "",
             f"Each background clip recurs about {doc['stream'].get('background_reuse', '?')} times in the stream, "
             "so a few clips can account for many alarms.", "",
             "| background source | ours | baseline |", "|---|---|---|"]
    lines += [f"| {source} | {cell(ours.get(source))} | {cell(baseline.get(source))} |" for source in sources]
    return lines + [""]


def _enter_text(point: dict) -> str:
    """``0.5``, or ``0.5 / 0.6`` when screams have a threshold of their own."""
    scream = point.get("enter_threshold_screaming")
    own = scream is not None and scream != point["enter_threshold"]
    return f"{point['enter_threshold']:g}" + (f" / {scream:g}" if own else "")


def _tradeoff_section(tradeoff: dict) -> list[str]:
    chosen = tradeoff.get("recommended")
    lines = ["## Trade-off: recall against false alarms", "",
             "Fusion and the event tracker re-run over the recorded window scores (Wav2Vec2 on every gated window) "
             "for every fusion (YAMNet alone, Wav2Vec2 alone, weighted averages, each alerting by label or by cry + "
             "scream together, with and without the majority vote) x smoothing (mean over 1-4 windows) x "
             "enter_threshold x k-of-n, and every pair of thresholds for cries and for screams (combined from those "
             "runs); the DET-style plot draws each fusion's frontier. "
             f"Re-running the live setting reproduces the live events: {fmt(tradeoff['reproduces_live'])}. "
             f"Every point: `{tradeoff['file']}`" + (f"; plot: `{tradeoff['plot']}`." if tradeoff.get("plot") else "."),
             ""]
    if chosen:
        lines += [f"Recommended default: {tradeoff['recommended_text']}: {chosen['false_alarms_per_hour']:g} false "
                  f"alarms/h, recall at >= {MIN_SNR_DB:g} dB {fmt(chosen['recall_10db_up'])}, "
                  f"latency p95 {fmt(chosen['latency_p95_s'])} s. Why: {tradeoff['reason']}.", ""]
    lines += _ceiling_lines(tradeoff.get("ceiling"))
    lines += ["Pareto frontier (one row per distinct result) and the live setting:", "",
              "| fusion | vote | mean of | enter (cry / scream) | k of n | FA/h | recall Crying >= 10 dB "
              "| recall Screaming >= 10 dB | latency p95 (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in tradeoff["frontier"]:
        live = " (live)" if p["is_live_config"] else ""
        lines.append(f"| {p['family']}{live} | {fmt(p['require_vote'])} | {p.get('smooth_windows', 1)} | "
                     f"{_enter_text(p)} | "
                     f"{p['k_windows']} of {p['n_windows']} | {p['false_alarms_per_hour']:g} | "
                     f"{fmt(p['recall_10db_up']['Crying'])} | {fmt(p['recall_10db_up']['Screaming'])} | "
                     f"{fmt(p['latency_p95_s'])} |")
    return lines + [""] + _variant_table(tradeoff.get("recall_by_variant"))


def _ceiling_lines(ceiling: dict | None) -> list[str]:
    """Each event bar against the best any swept setting reaches for it alone (``tradeoff.decision_ceiling``)."""
    if not ceiling:
        return []
    targets = event_targets()
    cost = ceiling["fewest_false_alarms_per_hour_meeting_recall_bars"]
    return [f"Out of reach of tuning? Of the {ceiling['settings']} settings, the best within "
            f"{targets.false_alarms_per_hour:g} false alarms/h reach recall at >= {MIN_SNR_DB:g} dB "
            f"{fmt(ceiling['best_recall_10db_up_within_false_alarm_bar'])} (bars {fmt(targets.recall_10db_up)}); "
            + ("no setting meets both recall bars" if cost is None else
               f"meeting both recall bars costs at least {cost:g} false alarms/h")
            + f"; the fastest latency p95 of any setting is {fmt(ceiling['fastest_latency_p95_s'])} s "
            f"({fmt(ceiling['fastest_latency_p95_s_within_false_alarm_bar'])} s within the false-alarm bar; bar "
            f"{targets.latency_p95_s:g} s). A bar its own best setting misses needs better models, not other "
            "thresholds.", ""]


def _variant_table(variants: dict | None) -> list[str]:
    """What each way of deciding buys on this stream (``tradeoff.recall_by_variant``)."""
    if not variants:
        return []
    budgets = list(next(iter(variants.values())))
    lines = [f"Recall at >= {MIN_SNR_DB:g} dB of the worse-detected label, best setting within each false-alarm "
             "budget, per way of deciding:", "",
             "| decision | " + " | ".join(f"<= {b} FA/h" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    lines += [f"| {name} | " + " | ".join(fmt(row[b]) for b in budgets) + " |" for name, row in variants.items()]
    return lines + [""]


def _sensitivity_section(sensitivity: dict) -> list[str]:
    """What each ``fusion.false_alarm_budget`` gives on this bench's streams, beside what tuning promised; with
    episodes, what it gives on the crying episodes between the same household sound."""
    lines = _ladder_table(f"## Sensitivity (`fusion.false_alarm_budget`), on {sensitivity['hours']:g} h of this "
                          "bench's streams", sensitivity["rows"])
    if sensitivity.get("episodes"):
        episodes = sensitivity["episodes"]
        lines += _ladder_table(f"### The same budgets on the crying episodes and the negative-only stream "
                               f"({episodes['hours']:g} h)", episodes["rows"])
    return lines


def _ladder_table(title: str, rows: list[dict]) -> list[str]:
    lines = [title, "", "| budget /h | setting | tuning FA/h | FA/h here | Crying >= 10 dB | Screaming >= 10 dB | "
             "latency p95 s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        recall = row["recall_10db_up"]
        lines.append(f"| {row[LADDER_BUDGET]:g} | {row['setting']} | {fmt(row['tuning']['false_alarms_per_hour'])} | "
                     f"{row['false_alarms_per_hour']:.3g} | {fmt(recall.get('Crying'))} | "
                     f"{fmt(recall.get('Screaming'))} | {fmt(row['latency_p95_s'])} |")
    return lines + [""]


def _profile_section(profile: dict) -> list[str]:
    lines = [f"## Profile ({profile['seconds_profiled']:g} s of the stream, pyinstrument, `{profile['file']}`)", "",
             "| stage, including what it calls | s | share |", "|---|---|---|"]
    lines += [f"| `{c['function']}` ({c['location']}) | {c['seconds']} | {c['fraction']:.1%} |"
              for c in profile["top_inclusive"]]
    lines += ["", "| hot spot, own time | s | share |", "|---|---|---|"]
    lines += [f"| `{c['function']}` ({c['location']}) | {c['seconds']} | {c['fraction']:.1%} |"
              for c in profile["top_self"]]
    return lines + [""]


def render_markdown(doc: dict) -> str:
    lines = _header(doc) + _main_table(doc) + _snr_table(doc) + _miss_table(doc) + _false_alarm_table(doc)
    if doc.get("tradeoff"):
        lines += _tradeoff_section(doc["tradeoff"])
    if doc.get("sensitivity"):
        lines += _sensitivity_section(doc["sensitivity"])
    if doc.get("profile"):
        lines += _profile_section(doc["profile"])
    return "\n".join(lines)

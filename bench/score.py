"""Event-level scoring: what a parent feels (missed cries, alarms for the TV, delay), from event lists alone.

Pure: truth intervals and detected events in, figures out; no audio, no models. Every detected event is
judged by *where it was raised* (the audio time its start message went out):

- inside the tolerance window of a not-yet-matched truth of its label: a **hit** (latency = raised - onset);
- inside the window of an already matched truth of its label: a **duplicate** (a second alert for one cry);
- inside windows of other-label truths only: a **label confusion** (e.g. Crying raised on a scream);
- outside every truth window: a **false alarm** (raised where no cry or scream was inserted).

A truth window is ``[onset - tolerance_before, offset + tolerance_after]``: the tracker needs a window or two
after the sound to decide, so an event raised just after a short scream still belongs to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from monitor.constants import ALERT_LABELS

SECONDS_PER_HOUR = 3600.0
CLEAN_KEY = "clean"
"""SNR bucket of a clip inserted over the quiet room (no background under it)."""

HIT, DUPLICATE, CONFUSION, FALSE_ALARM = "hit", "duplicate", "confusion", "false_alarm"
LATENCY_PERCENTILES = (50, 95)
CONFIDENCE = 0.95
"""Of the intervals the bench gives around its rates and recalls."""
_BISECTION_STEPS = 200


@dataclass(frozen=True)
class TruthEvent:
    """A cry or scream inserted into the stream; onset/offset are its first/last energetic samples."""

    label: str
    onset_s: float
    offset_s: float
    snr_db: float | None
    """Level of the clip over the background under it; None = clean (over the quiet room only)."""
    clip: str = ""

    @property
    def snr_key(self) -> str:
        return snr_key(self.snr_db)

    def to_dict(self) -> dict:
        return {"label": self.label, "onset_s": round(self.onset_s, 4), "offset_s": round(self.offset_s, 4),
                "snr_db": self.snr_db, "clip": self.clip}

    @classmethod
    def from_dict(cls, data: dict) -> TruthEvent:
        return cls(label=data["label"], onset_s=float(data["onset_s"]), offset_s=float(data["offset_s"]),
                   snr_db=None if data.get("snr_db") is None else float(data["snr_db"]), clip=data.get("clip", ""))


@dataclass(frozen=True)
class DetectedEvent:
    """One alert as the system raised it, on the audio clock."""

    label: str
    start_s: float
    """Start the event claims (may be back-dated to the first alerting window)."""
    end_s: float
    raised_s: float
    """When the start message was emitted: what the parent's phone sees; latency is measured from here."""

    def to_dict(self) -> dict:
        return {"label": self.label, "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
                "raised_s": round(self.raised_s, 4)}

    @classmethod
    def from_dict(cls, data: dict) -> DetectedEvent:
        return cls(label=data["label"], start_s=float(data["start_s"]), end_s=float(data["end_s"]),
                   raised_s=float(data["raised_s"]))


@dataclass(frozen=True)
class ScoreSpec:
    tolerance_before_s: float = 0.5
    """An event raised this long before the energetic onset still counts (the onset criterion is a threshold)."""
    tolerance_after_s: float = 3.0
    """An event raised up to this long after the last energetic sample still counts (decision delay)."""


@dataclass(frozen=True)
class EventOutcome:
    event: DetectedEvent
    kind: str
    truth_index: int | None
    latency_s: float | None


@dataclass
class LabelScore:
    truths: int = 0
    hits: int = 0
    events: int = 0
    duplicates: int = 0
    confusions: int = 0
    """Events of this label raised on a truth of another label."""
    false_alarms: int = 0
    truths_by_snr: dict[str, int] = field(default_factory=dict)
    hits_by_snr: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    latencies_by_snr: dict[str, list[float]] = field(default_factory=dict)

    @property
    def recall(self) -> float | None:
        return self.hits / self.truths if self.truths else None

    @property
    def precision(self) -> float | None:
        return self.hits / self.events if self.events else None

    def recall_by_snr(self) -> dict[str, float]:
        return {key: self.hits_by_snr.get(key, 0) / count for key, count in self.truths_by_snr.items() if count}

    def to_dict(self) -> dict:
        return {"truths": self.truths, "hits": self.hits, "events": self.events, "duplicates": self.duplicates,
                "confusions": self.confusions, "false_alarms": self.false_alarms,
                "event_recall": round_or_none(self.recall), "event_precision": round_or_none(self.precision),
                "recall_by_snr": {k: round_or_none(v) for k, v in self.recall_by_snr().items()},
                "truths_by_snr": dict(self.truths_by_snr),
                "latency_by_snr": {k: latency_summary(v) for k, v in self.latencies_by_snr.items()},
                **latency_summary(self.latencies_s)}


@dataclass
class Score:
    per_label: dict[str, LabelScore]
    outcomes: list[EventOutcome]
    truths: list[TruthEvent]
    truth_hit: list[bool]
    truth_alerted: list[bool]
    """Truth got an event of any alert label (a hit or a confusion): the parent was woken either way."""
    stream_seconds: float
    background_seconds: float

    def count(self, kind: str) -> int:
        return sum(outcome.kind == kind for outcome in self.outcomes)

    @property
    def false_alarms(self) -> int:
        return self.count(FALSE_ALARM)

    @property
    def false_alarms_per_hour(self) -> float:
        hours = self.background_seconds / SECONDS_PER_HOUR
        return self.false_alarms / hours if hours > 0 else 0.0

    @property
    def latencies_s(self) -> list[float]:
        return [o.latency_s for o in self.outcomes if o.kind == HIT and o.latency_s is not None]

    @property
    def false_alarms_per_hour_interval(self) -> tuple[float, float] | None:
        """Where the true rate may lie, given how few false alarms these hours could show (``rate_interval``)."""
        return rate_interval(self.false_alarms, self.background_seconds / SECONDS_PER_HOUR)

    def recall_counts(self, label: str, min_snr_db: float | None = None) -> tuple[int, int]:
        """(hits, truths) of ``label`` over truths at ``min_snr_db`` or cleaner (None = all truths)."""
        chosen = [hit for truth, hit in zip(self.truths, self.truth_hit, strict=True)
                  if truth.label == label and (min_snr_db is None or truth.snr_db is None
                                               or truth.snr_db >= min_snr_db)]
        return sum(chosen), len(chosen)

    def recall(self, label: str, min_snr_db: float | None = None) -> float | None:
        """Recall of ``label`` over truths at ``min_snr_db`` or cleaner (None = all truths)."""
        hits, truths = self.recall_counts(label, min_snr_db)
        return hits / truths if truths else None

    def recall_interval(self, label: str, min_snr_db: float | None = None) -> tuple[float, float] | None:
        return proportion_interval(*self.recall_counts(label, min_snr_db))

    @property
    def alert_recall(self) -> float | None:
        return sum(self.truth_alerted) / len(self.truth_alerted) if self.truth_alerted else None

    def to_dict(self) -> dict:
        return {
            "event_recall": {label: round_or_none(s.recall) for label, s in self.per_label.items()},
            "event_precision": {label: round_or_none(s.precision) for label, s in self.per_label.items()},
            "alert_recall_any_label": round_or_none(self.alert_recall),
            "false_alarms": self.false_alarms,
            "false_alarms_per_hour": round(self.false_alarms_per_hour, 4),
            "label_confusions": self.count(CONFUSION),
            "duplicates": self.count(DUPLICATE),
            **latency_summary(self.latencies_s),
            "stream_hours": round(self.stream_seconds / SECONDS_PER_HOUR, 4),
            "background_hours": round(self.background_seconds / SECONDS_PER_HOUR, 4),
            "per_label": {label: s.to_dict() for label, s in self.per_label.items()},
        }


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def rounded_interval(interval: tuple[float, float] | None, digits: int = 4) -> list[float] | None:
    return None if interval is None else [round(float(bound), digits) for bound in interval]


def poisson_cdf(count: int, mean: float) -> float:
    """P(X <= count) for X ~ Poisson(mean), summed in log space (no scipy in the runtime's dependencies)."""
    if count < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    log_mean = math.log(mean)
    return min(1.0, sum(math.exp(i * log_mean - mean - math.lgamma(i + 1)) for i in range(count + 1)))


def _mean_where_cdf_is(count: int, target: float) -> float:
    """The Poisson mean at which P(X <= count) = ``target`` (the CDF falls as the mean grows): by bisection."""
    low, high = 0.0, count + 10.0 * math.sqrt(count + 1.0) + 10.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if poisson_cdf(count, middle) > target else (low, middle)
    return (low + high) / 2


def poisson_interval(count: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Garwood) central interval of a Poisson mean from one observed ``count``.

    False alarms are rare events counted over a stream: 0 in 12 h is not a rate of 0, it leaves anything up to
    3.7 / 12 = 0.31 per hour plausible at 95%. Clustered alarms (one background clip that recurs) make the truth
    wider still, so this is the narrowest honest interval, not a generous one."""
    if count < 0 or not 0 < confidence < 1:
        raise ValueError(f"need a count >= 0 and 0 < confidence < 1, got {count} and {confidence}")
    tail = (1.0 - confidence) / 2
    low = 0.0 if count == 0 else _mean_where_cdf_is(count - 1, 1.0 - tail)
    return low, _mean_where_cdf_is(count, tail)


def rate_interval(count: int, hours: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """``poisson_interval`` of ``count`` events per hour of ``hours``; None without any hours."""
    if hours <= 0:
        return None
    low, high = poisson_interval(count, confidence)
    return low / hours, high / hours


def hours_to_show(rate_per_hour: float, confidence: float = CONFIDENCE) -> float:
    """Stream hours after which even no false alarm at all puts the interval's top at ``rate_per_hour``: a bar
    on a shorter stream can be met by the count but not shown."""
    if rate_per_hour <= 0:
        raise ValueError(f"a rate bar must be positive, got {rate_per_hour}")
    return poisson_interval(0, confidence)[1] / rate_per_hour


def proportion_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (sound at 0 and at 1, unlike the normal approximation); None
    without trials. The insertions of one clip at three SNRs are not independent: read it as a lower bound on
    the uncertainty."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == trials else min(1.0, centre + half)


def snr_key(snr_db: float | None) -> str:
    return CLEAN_KEY if snr_db is None else f"{snr_db:g}dB"


def latency_summary(latencies: Sequence[float]) -> dict[str, float | None]:
    """``latency_p50_s`` / ``latency_p95_s`` (None without hits)."""
    values = np.asarray(latencies, dtype=np.float64)
    return {f"latency_p{p}_s": (round(float(np.percentile(values, p)), 4) if values.size else None)
            for p in LATENCY_PERCENTILES}


def truth_window(truth: TruthEvent, spec: ScoreSpec) -> tuple[float, float]:
    return truth.onset_s - spec.tolerance_before_s, truth.offset_s + spec.tolerance_after_s


def union_seconds(intervals: Iterable[tuple[float, float]], stream_seconds: float) -> float:
    """Total length of the union of intervals, clipped to the stream."""
    total, reach = 0.0, 0.0
    for start, end in sorted((max(0.0, a), min(stream_seconds, b)) for a, b in intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class IntervalIndex:
    """(start, end) intervals searchable by time: starts sorted, and the longest interval bounds how far back
    one can begin and still reach a given time (the sweep scores tens of thousands of event lists)."""

    def __init__(self, intervals: Sequence[tuple[float, float]]) -> None:
        self.order = np.argsort([start for start, _ in intervals], kind="stable")
        self.starts = np.array([intervals[i][0] for i in self.order], dtype=np.float64)
        self.ends = np.array([intervals[i][1] for i in self.order], dtype=np.float64)
        self.longest = float(np.max(self.ends - self.starts)) if len(intervals) else 0.0

    def overlapping(self, lo: float, hi: float) -> list[int]:
        """Indices of the intervals with start <= ``hi`` and end >= ``lo``, earliest start first."""
        first = int(np.searchsorted(self.starts, lo - self.longest, side="left"))
        last = int(np.searchsorted(self.starts, hi, side="right"))
        return [int(self.order[k]) for k in range(first, last) if self.ends[k] >= lo]


def truth_windows(truths: Sequence[TruthEvent], spec: ScoreSpec) -> IntervalIndex:
    """The truths' tolerance windows; ``overlapping(t, t)`` lists the truths around ``t``, earliest onset first."""
    return IntervalIndex([truth_window(t, spec) for t in truths])


def classify_event(event: DetectedEvent, truths: Sequence[TruthEvent], matched: list[bool],
                   windows: IntervalIndex) -> EventOutcome:
    """Judge one event against the truths (``windows``: ``truth_windows``); marks the truth it hits in
    ``matched``."""
    candidates = windows.overlapping(event.raised_s, event.raised_s)
    same_label = [i for i in candidates if truths[i].label == event.label]
    for index in same_label:
        if not matched[index]:
            matched[index] = True
            return EventOutcome(event, HIT, index, event.raised_s - truths[index].onset_s)
    if same_label:
        return EventOutcome(event, DUPLICATE, same_label[0], None)
    if candidates:
        return EventOutcome(event, CONFUSION, candidates[0], None)
    return EventOutcome(event, FALSE_ALARM, None, None)


def score_events(truths: Sequence[TruthEvent], events: Sequence[DetectedEvent], stream_seconds: float,
                 spec: ScoreSpec = ScoreSpec(), labels: Sequence[str] = ALERT_LABELS) -> Score:
    """Match ``events`` to ``truths`` in the order they were raised; see the module docstring for the rules."""
    truths = list(truths)
    matched = [False] * len(truths)
    windows = truth_windows(truths, spec)
    outcomes = [classify_event(e, truths, matched, windows) for e in sorted(events, key=lambda e: e.raised_s)]
    alerted = list(matched)
    for outcome in outcomes:
        if outcome.kind == CONFUSION:
            alerted[outcome.truth_index] = True
    per_label = {label: LabelScore() for label in labels}
    for truth, hit in zip(truths, matched, strict=True):
        s = per_label.setdefault(truth.label, LabelScore())
        s.truths += 1
        s.hits += hit
        s.truths_by_snr[truth.snr_key] = s.truths_by_snr.get(truth.snr_key, 0) + 1
        s.hits_by_snr[truth.snr_key] = s.hits_by_snr.get(truth.snr_key, 0) + int(hit)
    for outcome in outcomes:
        s = per_label.setdefault(outcome.event.label, LabelScore())
        s.events += 1
        s.duplicates += outcome.kind == DUPLICATE
        s.confusions += outcome.kind == CONFUSION
        s.false_alarms += outcome.kind == FALSE_ALARM
        if outcome.kind == HIT:
            s.latencies_s.append(outcome.latency_s)
            s.latencies_by_snr.setdefault(truths[outcome.truth_index].snr_key, []).append(outcome.latency_s)
    covered = union_seconds((truth_window(t, spec) for t in truths), stream_seconds)
    return Score(per_label=per_label, outcomes=outcomes, truths=truths, truth_hit=matched, truth_alerted=alerted,
                 stream_seconds=stream_seconds, background_seconds=max(0.0, stream_seconds - covered))


ROOM_TONE = "room tone only"


def blame(events: Sequence[DetectedEvent], spans: Sequence[tuple[float, float, str]], lookback_s: float) -> list[str]:
    """Per event, the name of the span (start_s, end_s, name) overlapping most of the ``lookback_s`` before it was
    raised (what the tracker was hearing when it decided); ROOM_TONE when nothing was sounding."""
    ordered = sorted(spans)
    index = IntervalIndex([(start, end) for start, end, _ in ordered])
    causes = []
    for event in events:
        lo, hi = event.raised_s - lookback_s, event.raised_s
        overlaps = {}
        for start, end, name in (ordered[k] for k in index.overlapping(lo, hi)):
            overlap = min(end, hi) - max(start, lo)
            if overlap > 0:
                overlaps[name] = overlaps.get(name, 0.0) + overlap
        causes.append(max(overlaps, key=overlaps.get) if overlaps else ROOM_TONE)
    return causes

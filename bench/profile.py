"""Where the pipeline's time goes: a pyinstrument profile of a replay, boiled down to the top costs.

pyinstrument is a dev extra, imported only here and only when profiling is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SAMPLING_INTERVAL_S = 0.001
TOP_COSTS = 10
WRAPPER_FUNCTIONS = ("<lambda>", "<listcomp>", "<genexpr>", "<dictcomp>")
"""Anonymous frames say nothing about the stage they belong to."""
HARNESS_PREFIX = "bench/"
"""The benchmark's own frames (progress bar, recording) are not pipeline stages."""
WHOLE_RUN_FRACTION = 0.99
"""A frame holding this share of the run is the run itself (``Pipeline.run``), not a stage of it."""
NATIVE_BINDING_PREFIX = "pybind11_"
"""pybind11 calls show as ``pybind11_detail_function_record_<abi>.run``: in this pipeline that is ONNX Runtime."""


@dataclass(frozen=True)
class Cost:
    function: str
    location: str
    seconds: float
    fraction: float

    def to_dict(self) -> dict:
        return {"function": self.function, "location": self.location, "seconds": round(self.seconds, 4),
                "fraction": round(self.fraction, 4)}


@dataclass
class ProfileReport:
    total_seconds: float
    self_time: list[Cost] = field(default_factory=list)
    """Functions by time spent in their own code (the hot spots)."""
    inclusive_time: list[Cost] = field(default_factory=list)
    """Pipeline functions by time including what they call (the expensive stages)."""
    text: str = ""

    def to_dict(self) -> dict:
        return {"total_seconds": round(self.total_seconds, 3), "top_self": [c.to_dict() for c in self.self_time],
                "top_inclusive": [c.to_dict() for c in self.inclusive_time]}


def _name(frame) -> str:
    if frame.function.startswith(NATIVE_BINDING_PREFIX):
        return f"onnxruntime InferenceSession.{frame.function.rsplit('.', 1)[-1]} (native)"
    return f"{frame.class_name}.{frame.function}" if getattr(frame, "class_name", None) else frame.function


def _is_stage(key: tuple[str, str], fraction: float) -> bool:
    name, location = key
    return (fraction < WHOLE_RUN_FRACTION and name not in WRAPPER_FUNCTIONS
            and not location.startswith(HARNESS_PREFIX))


def _walk(frame, ancestors: frozenset, self_times: dict, inclusive: dict, app_only: set) -> None:
    key = (_name(frame), frame.file_path_short or "")
    if not frame.is_synthetic:
        self_times[key] = self_times.get(key, 0.0) + frame.total_self_time
        if key not in ancestors:  # recursion: count the outermost call only
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        if frame.is_application_code:
            app_only.add(key)
        ancestors = ancestors | {key}
    for child in frame.children:
        _walk(child, ancestors, self_times, inclusive, app_only)


def _top(times: dict, total: float, keep: Callable[[tuple, float], bool]) -> list[Cost]:
    share = {k: (v / total if total else 0.0) for k, v in times.items()}
    ranked = sorted(((k, v) for k, v in times.items() if keep(k, share[k])), key=lambda kv: -kv[1])[:TOP_COSTS]
    return [Cost(function=k[0], location=k[1], seconds=v, fraction=share[k]) for k, v in ranked]


def summarise(root) -> ProfileReport:
    """Top costs of a pyinstrument root frame: by self time, and application functions by inclusive time."""
    if root is None:
        return ProfileReport(total_seconds=0.0)
    self_times: dict = {}
    inclusive: dict = {}
    app_only: set = set()
    _walk(root, frozenset(), self_times, inclusive, app_only)
    total = root.time
    return ProfileReport(total_seconds=total,
                         self_time=_top(self_times, total, lambda k, share: True),
                         inclusive_time=_top(inclusive, total, lambda k, share: k in app_only and _is_stage(k, share)))


def profile_call(work: Callable[[], object]) -> ProfileReport:
    """Run ``work`` under pyinstrument and summarise it; the text rendering is kept for the report folder."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=SAMPLING_INTERVAL_S)
    profiler.start()
    try:
        work()
    finally:
        profiler.stop()
    report = summarise(profiler.last_session.root_frame())
    report.text = profiler.output_text(unicode=False, color=False, show_all=False)
    return report

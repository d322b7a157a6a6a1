"""Contract: every payload the tracker can produce validates against monitor/schema/event.schema.json."""

import copy
import itertools
import json
from collections import defaultdict
from datetime import datetime, timezone

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import FusionConfig
from monitor.constants import EVENT_SCHEMA, YAMNET_AUDIOSET_CLASSES
from monitor.events import EVENT_SCHEMA_PATH, PHASE_END, PHASE_START, EventTracker
from monitor.fusion import fuse_window

WALL = datetime(2026, 11, 25, 22, 15, 0, tzinfo=timezone.utc)
HOP_S = 0.5
SCHEMA = json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

window_scores = st.one_of(
    st.none(),
    st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.booleans(), st.floats(-90.0, 0.0)),
)


def probabilities(a: float, b: float, c: float) -> np.ndarray:
    raw = np.array([a, b, c]) + 1e-6
    return raw / raw.sum()


def run(windows, cfg: FusionConfig) -> list[dict]:
    ids = itertools.count()
    tracker = EventTracker(cfg, "nursery-1", {"yamnet": "yamnet-0123abcd"}, WALL, id_factory=lambda: f"e{next(ids)}")
    payloads, now = [], 0.0
    for index, scores in enumerate(windows):
        now = 0.975 + HOP_S * index
        if scores is None:
            events = tracker.update(now, None, -80.0, {})
        else:
            a, b, c, with_wav2vec2, level = scores
            yamnet = probabilities(a, b, c)
            wav2vec2 = probabilities(a, c, b) if with_wav2vec2 else None
            audioset = np.full(YAMNET_AUDIOSET_CLASSES, a)
            fused = fuse_window(yamnet, wav2vec2, audioset, cfg)
            models = {"yamnet": yamnet} | ({"wav2vec2": wav2vec2} if with_wav2vec2 else {})
            events = tracker.update(now, fused, level, models)
        payloads += [e.to_payload() for e in events]
    payloads += [e.to_payload() for e in tracker.finish(now + HOP_S)]
    return payloads


def test_schema_is_valid_draft_2020_12_and_versioned():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema"]["const"] == EVENT_SCHEMA
    assert SCHEMA["additionalProperties"] is False


@settings(max_examples=60, deadline=None)
@given(st.lists(window_scores, min_size=1, max_size=120), st.integers(1, 3), st.floats(0.0, 3.0))
def test_generated_payloads_validate_and_events_are_well_formed(windows, k, min_duration):
    cfg = FusionConfig(enter_threshold=0.5, exit_threshold=0.3, k_windows=k, n_windows=3,
                       min_duration_seconds=min_duration, hold_seconds=1.5, cooldown_seconds=1.0,
                       update_interval_seconds=1.0, require_vote=False).resolve()
    payloads = run(windows, cfg)
    by_event = defaultdict(list)
    for payload in payloads:
        VALIDATOR.validate(payload)
        by_event[payload["event_id"]].append(payload)
    assert len({p["message_id"] for p in payloads}) == len(payloads)
    for messages in by_event.values():
        assert [m["seq"] for m in messages] == list(range(len(messages)))
        assert messages[0]["phase"] == PHASE_START and messages[-1]["phase"] == PHASE_END
        assert all(m["phase"] not in (PHASE_START, PHASE_END) for m in messages[1:-1])
        assert messages[-1]["duration_s"] >= min_duration - 1e-6
        assert len({(m["label"], m["start_time"]) for m in messages}) == 1


def test_a_full_event_validates_and_the_schema_rejects_broken_payloads():
    cry = (0.9, 0.05, 0.05, True, -20.0)
    payloads = run([cry] * 30, FusionConfig().resolve())
    assert {p["phase"] for p in payloads} == {"start", "update", "end"}
    for payload in payloads:
        VALIDATOR.validate(payload)
    start = payloads[0]
    broken = [
        start | {"extra": 1},
        start | {"schema": 2},
        start | {"end_time": "2026-11-25T22:15:09.000Z"},
        start | {"phase": "paused"},
        start | {"confidence": 1.5},
        start | {"start_time": "2026-11-25 22:15:00"},
        {k: v for k, v in start.items() if k != "reason"},
    ]
    nested = copy.deepcopy(start)
    nested["models"]["panns"] = {"peak": 0.1, "mean": 0.1}
    broken.append(nested)
    for payload in broken:
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(payload)

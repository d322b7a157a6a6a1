"""The stream generator puts every cry and scream where its truth says, at the SNR it says, reproducibly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from bench.stream import (
    ACTIVITY_FRAME_SAMPLES,
    ROLE_ALERT,
    ROLE_BACKGROUND,
    ROLE_BED,
    StreamRenderer,
    StreamSpec,
    make_source_clip,
    measure_activity,
    plan_stream,
    read_truth,
    write_stream,
)
from monitor.constants import SAMPLE_RATE
from monitor.signal_helpers import rms_dbfs

SPEC = StreamSpec(hours=0.1, seed=5, quiet_s=(20.0, 30.0), gap_s=(0.5, 3.0))
LEADING_SILENCE_S = 0.8
SNR_TOLERANCE_DB = 0.1
"""The 10 ms edge fades are the only thing between the requested and the measured SNR."""


def _modulated_tone(freq: float, seconds: float, lead_s: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = amplitude * np.sin(2 * np.pi * freq * t) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    return np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE)), tone]).astype(np.float32)


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    made = [make_source_clip(f"normal-{i}", "Normal", (0.05 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32))
            for i in range(4)]
    made += [make_source_clip(f"cry-{i}", "Crying", _modulated_tone(400 + 40 * i, 4.0, LEADING_SILENCE_S))
             for i in range(3)]
    made += [make_source_clip("scream-0", "Screaming", _modulated_tone(1200, 1.5, LEADING_SILENCE_S))]
    return made


@pytest.fixture(scope="module")
def plan(clips):
    return plan_stream(clips, SPEC)


@pytest.fixture(scope="module")
def renderer(plan, clips):
    return StreamRenderer(plan, clips)


def _seconds_to_sample(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def test_activity_finds_the_sound_after_leading_silence():
    samples = _modulated_tone(500, 2.0, lead_s=0.5)
    activity = measure_activity(samples)
    assert abs(activity.start - 0.5 * SAMPLE_RATE) <= ACTIVITY_FRAME_SAMPLES
    assert abs(activity.end - samples.size) <= ACTIVITY_FRAME_SAMPLES
    assert measure_activity(np.zeros(SAMPLE_RATE, np.float32)) is None


def test_stream_has_the_requested_length_and_every_condition(plan):
    assert plan.sample_count == _seconds_to_sample(SPEC.hours * 3600)
    conditions = {(t.label, t.snr_db) for t in plan.truth}
    assert conditions == {(label, snr) for label in ("Crying", "Screaming") for snr in SPEC.snrs_db}


def test_onsets_are_where_the_truth_says(plan, renderer):
    frame = ACTIVITY_FRAME_SAMPLES
    for truth in plan.truth:
        onset, offset = _seconds_to_sample(truth.onset_s), _seconds_to_sample(truth.offset_s)
        alert = renderer.render(onset - SAMPLE_RATE, offset + SAMPLE_RATE, roles=(ROLE_ALERT,), room_tone=False)
        assert not np.any(alert[:SAMPLE_RATE - frame]), f"alert sound before its onset at {truth.onset_s}"
        assert rms_dbfs(alert[SAMPLE_RATE:SAMPLE_RATE + 10 * frame]) > -60
        assert not np.any(alert[-SAMPLE_RATE + frame:]), f"alert sound after its offset at {truth.offset_s}"


def test_clean_insertions_stand_out_of_the_quiet_room_at_the_onset(plan, renderer):
    window = _seconds_to_sample(0.2)
    clean = [t for t in plan.truth if t.snr_db is None]
    assert clean
    for truth in clean:
        onset = _seconds_to_sample(truth.onset_s)
        before = renderer.render(onset - window, onset)
        after = renderer.render(onset, onset + window)
        assert rms_dbfs(after) - rms_dbfs(before) > 20, f"no energy step at {truth.onset_s}"


def test_snr_of_the_mix_computed_back_from_the_parts(plan, renderer):
    mixed = [t for t in plan.truth if t.snr_db is not None]
    assert mixed
    for truth in mixed:
        onset, offset = _seconds_to_sample(truth.onset_s), _seconds_to_sample(truth.offset_s)
        alert = renderer.render(onset, offset, roles=(ROLE_ALERT,), room_tone=False)
        bed = renderer.render(onset, offset, roles=(ROLE_BED,), room_tone=False)
        measured = measure_activity(alert).level_dbfs - rms_dbfs(bed)
        assert measured == pytest.approx(truth.snr_db, abs=SNR_TOLERANCE_DB)


def test_insertions_are_spaced_and_background_never_overlaps_them(plan):
    for earlier, later in zip(plan.truth, plan.truth[1:], strict=False):
        assert later.onset_s - earlier.offset_s >= SPEC.quiet_s[0]
    event_spans = [(p.start, p.end) for p in plan.placements if p.role in (ROLE_ALERT, ROLE_BED)]
    for p in plan.placements:
        if p.role == ROLE_BACKGROUND:
            assert all(p.end <= start or p.start >= end for start, end in event_spans)
        assert 0 <= p.start and p.end <= plan.sample_count


def test_same_seed_same_stream_other_seed_other_stream(clips, plan, renderer):
    again = plan_stream(clips, SPEC)
    assert again.truth == plan.truth and again.placements == plan.placements
    span = (0, 30 * SAMPLE_RATE)
    np.testing.assert_array_equal(StreamRenderer(again, clips).render(*span), renderer.render(*span))
    other = plan_stream(clips, StreamSpec(hours=SPEC.hours, seed=SPEC.seed + 1, quiet_s=SPEC.quiet_s))
    assert [t.onset_s for t in other.truth] != [t.onset_s for t in plan.truth]


def test_rendering_in_chunks_equals_rendering_at_once(renderer):
    whole = renderer.render(0, 20 * SAMPLE_RATE)
    chunks = np.concatenate([renderer.render(s, s + 7777) for s in range(0, 20 * SAMPLE_RATE, 7777)])
    np.testing.assert_array_equal(chunks[:whole.size], whole)


def test_written_flac_and_truth_round_trip(tmp_path, clips):
    small = plan_stream(clips, StreamSpec(hours=0.02, seed=1, quiet_s=(20.0, 25.0)))
    audio, truth_path = tmp_path / "stream.flac", tmp_path / "truth.json"
    write_stream(small, clips, audio, truth_path)
    info = sf.info(str(audio))
    assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, small.sample_count)
    truths, seconds = read_truth(truth_path)
    assert seconds == pytest.approx(small.seconds)
    assert [(t.label, t.snr_db) for t in truths] == [(t.label, t.snr_db) for t in small.truth]
    assert [t.onset_s for t in truths] == pytest.approx([t.onset_s for t in small.truth], abs=1e-3)


def test_missing_material_is_a_clear_error(clips):
    normals = [c for c in clips if c.label == "Normal"]
    alerts = [c for c in clips if c.label != "Normal"]
    with pytest.raises(ValueError, match="Normal"):
        plan_stream(alerts, SPEC)
    with pytest.raises(ValueError, match="Crying or Screaming"):
        plan_stream(normals, SPEC)
    with pytest.raises(ValueError, match="positive"):
        plan_stream(clips, StreamSpec(hours=0))


def test_a_negative_only_stream_has_no_insertion_and_only_normal_clips(clips):
    plan = plan_stream(clips, StreamSpec(hours=0.05, seed=3, label_weights={}, gap_s=(0.5, 3.0)))
    assert plan.truth == []
    assert plan.placements and all(clips[p.clip].label == "Normal" for p in plan.placements)
    covered = sum(p.length for p in plan.placements) / plan.sample_count
    assert covered > 0.3


def test_overlap_puts_a_second_clip_over_the_first(clips):
    spec = StreamSpec(hours=0.05, seed=3, label_weights={}, gap_s=(0.5, 3.0), overlap_probability=0.5)
    plan = plan_stream(clips, spec)
    overlapping = sum(1 for a, b in zip(plan.placements, plan.placements[1:], strict=False) if b.start < a.end)
    assert overlapping >= 3
    no_overlap = plan_stream(clips, StreamSpec(hours=0.05, seed=3, label_weights={}, gap_s=(0.5, 3.0)))
    assert not any(b.start < a.end for a, b in zip(no_overlap.placements, no_overlap.placements[1:], strict=False))


def test_a_stream_spec_needs_insertions_or_none_at_all():
    with pytest.raises(ValueError, match="not all zero"):
        StreamSpec(label_weights={"Crying": 0.0}).validate()
    with pytest.raises(ValueError, match="overlap_probability"):
        StreamSpec(overlap_probability=1.5).validate()


def test_an_episode_is_one_recording_s_clips_in_a_row_at_the_snr_it_says(clips):
    """Each insertion lasts about ``episode_s`` and is made only of its first clip's recording (repeated when it has
    too few clips), with pauses in ``episode_pause_s``; its truth spans it, and the SNR holds over the whole of it."""
    grouped = [c if c.label == "Normal" else dataclasses.replace(c, group="baby-a" if c.name != "cry-2" else "baby-b")
               for c in clips]
    spec = dataclasses.replace(SPEC, hours=0.2, episode_s=20.0, episode_pause_s=(0.5, 1.5))
    plan = plan_stream(grouped, spec)
    renderer = StreamRenderer(plan, grouped)
    assert {t.label for t in plan.truth} == {"Crying", "Screaming"}
    for truth in plan.truth:
        parts = sorted((p for p in plan.placements if p.role == ROLE_ALERT
                        and truth.onset_s - 1 <= p.start / SAMPLE_RATE <= truth.offset_s), key=lambda p: p.start)
        assert len(parts) >= 2 and "episode of" in truth.clip
        assert len({(grouped[p.clip].label, grouped[p.clip].group) for p in parts}) == 1
        assert {grouped[p.clip].label for p in parts} == {truth.label}
        pauses = [(b.start - a.end) / SAMPLE_RATE for a, b in zip(parts, parts[1:], strict=False)]
        assert all(0.5 - 1e-3 <= pause <= 1.5 + 1e-3 for pause in pauses)
        assert (parts[-1].end - parts[0].start) / SAMPLE_RATE >= spec.episode_s
        assert len({p.gain for p in parts}) == 1
        if truth.snr_db is not None:
            onset, offset = _seconds_to_sample(truth.onset_s), _seconds_to_sample(truth.offset_s)
            alert = renderer.render(onset, offset, roles=(ROLE_ALERT,), room_tone=False)
            bed = renderer.render(onset, offset, roles=(ROLE_BED,), room_tone=False)
            assert measure_activity(alert).level_dbfs - rms_dbfs(bed) == pytest.approx(truth.snr_db,
                                                                                      abs=SNR_TOLERANCE_DB)
    assert plan_stream(grouped, dataclasses.replace(spec, episode_s=0.0)).truth == plan_stream(
        grouped, dataclasses.replace(SPEC, hours=0.2)).truth, "no episode: one clip per insertion, as before"

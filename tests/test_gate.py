import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from monitor.config import GateConfig, PreprocessConfig
from monitor.constants import SAMPLE_RATE, VAD_FRAME_SAMPLES
from monitor.gate import (
    REASON_BELOW_FLOOR,
    REASON_ENERGY,
    REASON_HANGOVER,
    REASON_SILENCE,
    REASON_VOICE,
    REASON_WARMUP,
    Gate,
    HighPassFilter,
    NoiseFloorTracker,
    fast_fft_length,
    frame_levels_dbfs,
)
from monitor.preprocess import condition_clip
from monitor.windows import SlidingWindower, hop_samples_from_seconds

HOP = hop_samples_from_seconds(0.5)
CFG = GateConfig()


# --- synthetic audio ---

def scaled(signal: np.ndarray, level_dbfs: float) -> np.ndarray:
    return (signal * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(np.square(signal)))).astype(np.float32)


def noise(seconds: float, level_dbfs: float, seed: int = 0) -> np.ndarray:
    return scaled(np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)), level_dbfs)


def tone(seconds: float, freq: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic(seconds: float, f0: float, level_dbfs: float, formants: tuple[float, ...], pulse_hz: float) -> np.ndarray:
    """A voiced, harmonic sound whose loudness pulses at ``pulse_hz`` (syllables, cry bursts)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / SAMPLE_RATE
    signal = np.zeros_like(t)
    for k in range(1, 25):
        weight = 0.05 + sum(np.exp(-(((k * f0) - f) / 200.0) ** 2) for f in formants)
        signal += weight / np.sqrt(k) * np.sin(k * phase)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * pulse_hz * t))
    return scaled(signal * envelope, level_dbfs)


def vowels(seconds: float, level_dbfs: float) -> np.ndarray:
    return harmonic(seconds, 140.0, level_dbfs, (700.0, 1200.0, 2600.0), pulse_hz=4.0)


def cry(seconds: float, level_dbfs: float) -> np.ndarray:
    """Infant-cry-like: F0 ~450 Hz, bursts of about a second with short breaths between."""
    return harmonic(seconds, 450.0, level_dbfs, (1100.0, 3000.0), pulse_hz=0.8)


def run_gate(audio: np.ndarray, cfg: GateConfig = CFG, chunks: int = 1):
    gate, windower = Gate(cfg), SlidingWindower(HOP)
    results = []
    for chunk in np.array_split(audio, chunks):
        results += [(window, gate.assess(window)) for window in windower.push(chunk)]
    return results


def overlapping(results, start_s: float, end_s: float):
    return [d for w, d in results if w.end_seconds > start_s and w.start_seconds < end_s]


# --- pure helpers ---

def test_frame_levels_of_a_sine():
    levels = frame_levels_dbfs(tone(1.0, 1000.0, 0.5))
    assert levels.size == SAMPLE_RATE // VAD_FRAME_SAMPLES
    np.testing.assert_allclose(levels, 20 * np.log10(0.5 / np.sqrt(2)), atol=0.1)


def test_fft_length_is_the_smallest_with_no_prime_factor_above_five():
    def smooth(n: int) -> bool:
        for prime in (2, 3, 5):
            while n % prime == 0:
                n //= prime
        return n == 1

    for minimum in [1, 2, 7, 97, 1000, 8510, *range(8600, 8700)]:
        length = fast_fft_length(minimum)
        assert length >= minimum and smooth(length)
        assert not any(smooth(n) for n in range(minimum, length)), minimum


def test_highpass_removes_rumble_keeps_the_cry_band_and_streams_exactly():
    rumble, voice = tone(2.0, 50.0, 0.5), tone(2.0, 1000.0, 0.5)
    settle = slice(SAMPLE_RATE // 2, None)
    assert frame_levels_dbfs(HighPassFilter(150).process(rumble)[settle]).max() < -60
    np.testing.assert_allclose(frame_levels_dbfs(HighPassFilter(150).process(voice)[settle]),
                               frame_levels_dbfs(voice[settle]), atol=0.2)
    mixed = rumble + voice
    whole = HighPassFilter(150).process(mixed)
    chunked_filter = HighPassFilter(150)
    chunked = np.concatenate([chunked_filter.process(c) for c in np.array_split(mixed, [7, 999, 8000, 8001])])
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_noise_floor_is_unknown_at_start_then_a_low_percentile_of_a_bounded_history():
    tracker = NoiseFloorTracker(horizon_frames=100, percentile=10, min_frames=20)
    tracker.add(np.full(5, -50.0))
    assert not tracker.known and tracker.floor_dbfs() is None
    tracker.add(np.full(20, -50.0))
    assert tracker.floor_dbfs() == -50.0
    tracker.add(np.linspace(-90, -10, 1000))
    assert tracker.count == tracker.capacity == 100
    assert tracker.floor_dbfs() == pytest.approx(np.percentile(np.linspace(-90, -10, 1000)[-100:], 10), abs=1.0)


# --- the gate ---

def test_digital_silence_and_very_quiet_audio_are_skipped():
    for audio in (np.zeros(20 * SAMPLE_RATE, np.float32), noise(20.0, CFG.silence_dbfs - 15)):
        decisions = [d for _, d in run_gate(audio)]
        assert not any(d.passed for d in decisions)
        assert {d.reason for d in decisions} == {REASON_SILENCE}


def test_floor_starts_permissive_then_steady_room_noise_is_skipped():
    decisions = [d for _, d in run_gate(noise(40.0, -50.0))]
    assert decisions[0].passed and decisions[0].reason == REASON_WARMUP and not decisions[0].floor_known
    settled = decisions[len(decisions) // 2:]
    assert all(d.floor_known for d in settled)
    assert sum(not d.passed for d in settled) >= 0.95 * len(settled)
    assert settled[-1].noise_floor_dbfs == pytest.approx(-50.0, abs=3.0)


def test_loud_burst_over_a_quiet_floor_passes():
    audio = np.concatenate([noise(20.0, -60.0), noise(0.3, -25.0, seed=1), noise(10.0, -60.0, seed=2)])
    results = run_gate(audio)
    during = overlapping(results, 20.05, 20.25)
    assert during and all(d.passed and d.reason in (REASON_ENERGY, REASON_VOICE) for d in during)
    assert not overlapping(results, 25.0, 30.0)[-1].passed


def test_voice_passes_on_vad_alone():
    no_energy_path = dataclasses.replace(CFG, energy_margin_db=40.0)
    speech = run_gate(np.concatenate([noise(20.0, -60.0), vowels(2.0, -35.0)]), no_energy_path)
    assert {d.reason for d in overlapping(speech, 20.5, 22.0)} == {REASON_VOICE}
    assert all(d.voiced_fraction > 0.8 for d in overlapping(speech, 20.5, 22.0))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_vad_on_espeak_speech(tmp_path):
    path = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello, is the baby asleep?"], check=True, capture_output=True)
    speech, rate = sf.read(path, dtype="float32")
    speech = condition_clip(speech, rate, PreprocessConfig())
    results = run_gate(np.concatenate([noise(20.0, -65.0), scaled(speech, -30.0)]))
    assert any(d.reason == REASON_VOICE for d in overlapping(results, 20.0, 20.0 + speech.size / SAMPLE_RATE))


def test_a_seven_second_cry_keeps_passing_and_does_not_become_the_floor():
    results = run_gate(np.concatenate([noise(25.0, -55.0), cry(7.0, -25.0) + noise(7.0, -55.0, seed=4)]))
    during = overlapping(results, 25.0, 32.0)
    assert all(d.passed for d in during)
    assert during[-1].noise_floor_dbfs < -50.0


def test_a_cry_from_the_very_start_of_the_stream_passes():
    results = run_gate(cry(12.0, -25.0) + noise(12.0, -60.0))
    assert all(d.passed for _, d in results)


def test_floor_follows_a_room_that_gets_noisier_and_one_that_gets_quieter():
    louder = [d for _, d in run_gate(np.concatenate([noise(20.0, -60.0), noise(40.0, -40.0, seed=5)]))]
    assert louder[-1].noise_floor_dbfs == pytest.approx(-40.0, abs=3.0)
    assert not any(d.passed for d in louder[-10:])
    quieter = run_gate(np.concatenate([noise(40.0, -40.0), noise(5.0, -60.0, seed=6), noise(0.5, -45.0, seed=7)]))
    assert quieter[-1][1].noise_floor_dbfs < -55.0
    assert all(d.passed for d in overlapping(quieter, 45.1, 45.4))


def test_hangover_keeps_passing_then_stops():
    cfg = dataclasses.replace(CFG, hangover_windows=2)
    results = run_gate(np.concatenate([noise(20.0, -60.0), noise(0.2, -20.0, seed=8), noise(8.0, -60.0, seed=9)]), cfg)
    reasons = [d.reason for w, d in results if w.end_seconds > 20.0]
    burst = [i for i, r in enumerate(reasons) if r in (REASON_ENERGY, REASON_VOICE)]
    after = burst[-1] + 1
    assert reasons[after:after + 2] == [REASON_HANGOVER, REASON_HANGOVER]
    assert set(reasons[after + 2:]) <= {REASON_BELOW_FLOOR}


def test_same_decisions_whatever_the_chunking():
    audio = np.concatenate([noise(12.0, -55.0), cry(3.0, -30.0), noise(5.0, -45.0, seed=10)])
    reference = [(w.index, d) for w, d in run_gate(audio)]
    for chunks in (7, 333):
        assert [(w.index, d) for w, d in run_gate(audio, chunks=chunks)] == reference


def test_overlapping_frames_are_analysed_once():
    class CountingVad:
        def __init__(self, vad):
            self.vad, self.calls = vad, 0

        def is_speech(self, frame, rate):
            self.calls += 1
            return self.vad.is_speech(frame, rate)

    gate = Gate(CFG)
    gate._vad = CountingVad(gate._vad)
    windows = SlidingWindower(HOP).push(noise(10.0, -40.0))
    for window in windows:
        gate.assess(window)
    assert gate._vad.calls == windows[-1].end_sample // VAD_FRAME_SAMPLES


def test_levels_are_reported():
    decision = run_gate(tone(2.0, 1000.0, 0.5))[0][1]
    assert decision.level_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)
    assert decision.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.1)
    assert decision.voiced_fraction >= 0.0


def test_a_gap_in_the_audio_restarts_frame_analysis_but_keeps_the_room():
    gate, windower = Gate(CFG), SlidingWindower(HOP)
    for window in windower.push(noise(20.0, -50.0)):
        gate.assess(window)
    floor = gate.floor.floor_dbfs()
    windower.reset(start_seconds=60.0)
    decisions = [gate.assess(w) for w in windower.push(noise(3.0, -50.0, seed=11))]
    assert decisions and all(d.floor_known for d in decisions)
    assert gate.floor.floor_dbfs() == pytest.approx(floor, abs=1.0)
    gate.reset()
    assert not gate.floor.known

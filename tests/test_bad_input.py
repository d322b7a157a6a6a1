"""Bad input to the real `nursery-monitor` process: audio files, model files and config.

Unreadable input gets one line naming the file and a non-zero exit, without a traceback; every readable
file, however odd (8 to 96 kHz, 1 to 8 channels, 8 to 64-bit, NaN/Inf samples, clipping, a truncated
data chunk, hours long), is processed. Decode-level versions are in tests/test_bad_audio.py, config
parsing in tests/test_config.py, manifest checks in tests/test_model_manifest.py.
"""

from __future__ import annotations

import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import app
from monitor.capture import FileReplaySource
from monitor.cli import main as cli_main
from monitor.config import AudioConfig, GateConfig, PreprocessConfig
from monitor.constants import SAMPLE_RATE, WINDOW_SAMPLES
from monitor.gate import PASS_REASONS, REASON_BELOW_FLOOR, REASON_SILENCE, Gate
from monitor.model_manifest import sha256_file
from monitor.preprocess import Conditioner, prepare_window
from monitor.windows import SlidingWindower, hop_samples_from_seconds
from tests.helpers.audio import RESAMPLE_TOLERANCE
from tests.helpers.daemon import TRACEBACK, cli, events_of, run_to_end, write_config
from tests.helpers.fake_models import TONE_HZ

CRY_HZ = TONE_HZ["Crying"]
CRY_AMPLITUDE = 0.3
LEAD_SECONDS = 0.3
CRY_SECONDS = 2.5
PROBLEM_PREFIX = "nursery-monitor: "
PROCESSED = re.compile(r"processed (\d+(?:\.\d+)?) s of audio")
SECONDS_TOLERANCE = 0.05
"""The 'processed ... s' log line has one decimal."""


def cry(frames: int, rate: int, channels: int, amplitude: float = CRY_AMPLITUDE) -> np.ndarray:
    """Quiet lead-in, then the fake models' Crying tone on every channel."""
    t = np.arange(frames) / rate
    mono = amplitude * np.sin(2 * np.pi * CRY_HZ * t) * (t >= LEAD_SECONDS)
    return np.repeat(mono[:, None], channels, axis=1)


@dataclass(frozen=True)
class OddFile:
    """A decodable file the daemon must process: its name says what is odd about it."""

    name: str
    rate: int
    channels: int
    subtype: str
    amplitude: float = CRY_AMPLITUDE
    poison_seconds: float = 0.0
    """Leading seconds of NaN / +Inf / -Inf samples."""
    keep_fraction: float = 1.0
    """The data chunk cut to this fraction while the header still claims it all."""

    def write(self, folder: Path) -> tuple[Path, float]:
        """The file and the seconds of audio it really holds."""
        path = folder / self.name
        frames = int((LEAD_SECONDS + CRY_SECONDS) * self.rate)
        data = cry(frames, self.rate, self.channels, self.amplitude)
        if self.subtype.startswith("PCM"):
            data = np.clip(data, -1.0, 1.0)  # integer files clip at full scale; float files keep > 1.0
        data[: int(self.poison_seconds * self.rate)] = np.nan
        data[: int(self.poison_seconds * self.rate): 7] = np.inf
        data[: int(self.poison_seconds * self.rate): 11] = -np.inf
        sf.write(str(path), data.astype(np.float64), self.rate, subtype=self.subtype)
        if self.keep_fraction < 1.0:
            raw = path.read_bytes()
            path.write_bytes(raw[: int(len(raw) * self.keep_fraction)])
        return path, sf.info(str(path)).frames / self.rate


ODD_FILES = [
    OddFile("8k-mono-u8.wav", 8000, 1, "PCM_U8"),
    OddFile("11k-stereo-16bit.wav", 11025, 2, "PCM_16"),
    OddFile("22k-4ch-24bit.wav", 22050, 4, "PCM_24"),
    OddFile("32k-6ch-32bit.wav", 32000, 6, "PCM_32"),
    OddFile("44k-8ch-float.wav", 44100, 8, "FLOAT"),
    OddFile("48k-stereo-double.wav", 48000, 2, "DOUBLE"),
    OddFile("96k-mono-24bit.wav", 96000, 1, "PCM_24"),
    OddFile("48k-stereo-8bit.flac", 48000, 2, "PCM_S8"),
    OddFile("16k-nan-inf-float.wav", 16000, 1, "FLOAT", poison_seconds=0.8),
    OddFile("44k-clipped-16bit.wav", 44100, 2, "PCM_16", amplitude=4.0),
    OddFile("48k-over-range-float.wav", 48000, 1, "FLOAT", amplitude=4.0),
    OddFile("16k-truncated-data.wav", 16000, 1, "PCM_16", keep_fraction=0.7),
]


def write_unreadable(folder: Path) -> dict[Path, str]:
    """Files the daemon must refuse, each with the words its one-line error must contain."""
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    header_only = folder / "header-only.wav"
    sf.write(str(header_only), np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    cut_header = folder / "cut-header.wav"
    sf.write(str(cut_header), np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    cut_header.write_bytes(cut_header.read_bytes()[:20])
    text = folder / "shopping-list.wav"
    text.write_text("milk, nappies, coffee\n" * 20)
    return {empty: "empty file", header_only: "contains no audio samples", cut_header: "not a readable audio file",
            text: "not a readable audio file", folder / "never-recorded.wav": "no such file"}


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(PROBLEM_PREFIX)]


def assert_each_named_once(stderr: str, unreadable: dict[Path, str]) -> None:
    problems = problem_lines(stderr)
    assert len(problems) == len(unreadable), problems
    for path, reason in unreadable.items():
        [line] = [p for p in problems if f"{path}:" in p]
        assert reason in line, line
    assert TRACEBACK not in stderr


@pytest.fixture
def odd_and_bad_files(tmp_path) -> tuple[dict[Path, float], dict[Path, str]]:
    folder = tmp_path / "audio"
    folder.mkdir()
    readable = dict(spec.write(folder) for spec in ODD_FILES)
    return readable, write_unreadable(folder)


def interleave(readable, unreadable) -> list[str]:
    """Bad files before, between and after the good ones."""
    bad, good = [str(p) for p in unreadable], [str(p) for p in readable]
    return bad[:2] + good[:6] + bad[2:4] + good[6:] + bad[4:]


def test_replay_names_each_unreadable_file_once_and_processes_every_readable_one(tmp_path, fake_models,
                                                                                  odd_and_bad_files):
    readable, unreadable = odd_and_bad_files
    config = write_config(tmp_path, fake_models)
    result = cli("replay", *interleave(readable, unreadable), "--config", str(config), "--events-jsonl", "-")

    assert result.returncode == 1, result.stderr
    assert_each_named_once(result.stderr, unreadable)
    for path in readable:
        assert f"replaying {path}" in result.stderr
    [processed] = PROCESSED.findall(result.stderr)
    assert float(processed) == pytest.approx(sum(readable.values()), abs=SECONDS_TOLERANCE)
    assert any(e["label"] == "Crying" for e in events_of(result.stdout))


def test_classify_names_each_unreadable_file_once_and_labels_every_readable_one(tmp_path, fake_models,
                                                                                 odd_and_bad_files):
    readable, unreadable = odd_and_bad_files
    config = write_config(tmp_path, fake_models)
    result = cli("classify", *interleave(readable, unreadable), "--config", str(config), "--json")

    assert result.returncode == 1, result.stderr
    assert_each_named_once(result.stderr, unreadable)
    labels = {Path(doc["path"]): doc["label"] for doc in map(json.loads, result.stdout.splitlines())}
    assert labels == dict.fromkeys(readable, "Crying"), "each odd file decoded into the tone it holds"


def test_readable_odd_files_alone_exit_zero(tmp_path, fake_models, odd_and_bad_files):
    readable, _ = odd_and_bad_files
    result = cli("replay", *map(str, readable), "--config", str(write_config(tmp_path, fake_models)), "--quiet")
    assert result.returncode == 0, result.stderr
    assert problem_lines(result.stderr) == [] and TRACEBACK not in result.stderr


# --- a multi-hour recording in constant memory -----------------------------------------------------------

LONG_HOURS = 3.0
SHORT_MINUTES = 5.0
LONG_RATE = 8000
CRY_EVERY_SECONDS = 15 * 60
NIGHT_NOISE = 1e-4
"""-80 dBFS room noise between the cries: below the gate's silence level, as in tests/test_daemon.tone_scene (the
fake models call louder noise anything at random)."""
FAST_REPLAY = {"window": {"hop_seconds": 0.975}, "audio": {"block_seconds": 1.0}}
"""Fewer, larger steps: the test replays hours; the memory behaviour is the same."""
RSS_GROWTH_LIMIT_MB = 24.0
"""Far below the decoded recording (3 h of 16 kHz float32: 690 MB) or the file itself (173 MB)."""


def write_night(path: Path, seconds: float) -> int:
    """A night at 8 kHz / 16 bit, written a minute at a time, with a cry every CRY_EVERY_SECONDS; the number of
    cries."""
    rng = np.random.default_rng(7)
    minute = LONG_RATE * 60
    cries = 0
    with sf.SoundFile(str(path), "w", samplerate=LONG_RATE, channels=1, subtype="PCM_16") as handle:
        for start in range(0, int(seconds * LONG_RATE), minute):
            block = NIGHT_NOISE * rng.standard_normal(minute)
            if start % (CRY_EVERY_SECONDS * LONG_RATE) == 0:
                block += cry(minute, LONG_RATE, 1)[:, 0] * (np.arange(minute) < (LEAD_SECONDS + CRY_SECONDS)
                                                           * LONG_RATE)
                cries += 1
            handle.write(block.astype(np.float32))
    return cries


def test_multi_hour_replay_runs_in_constant_memory(tmp_path, fake_models, record_property):
    night, nap = tmp_path / "night.wav", tmp_path / "nap.wav"
    cries = write_night(night, LONG_HOURS * 3600)
    write_night(nap, SHORT_MINUTES * 60)
    config = str(write_config(tmp_path, fake_models, **FAST_REPLAY))

    short = run_to_end("replay", str(nap), "--config", config, "--quiet")
    long = run_to_end("replay", str(night), "--config", config, "--events-jsonl", "-", "--quiet")

    assert short.process.returncode == 0 and long.process.returncode == 0, long.text()
    [processed] = PROCESSED.findall(long.text())
    assert float(processed) == pytest.approx(LONG_HOURS * 3600, abs=SECONDS_TOLERANCE)
    starts = [e for e in events_of(long.text("stdout")) if e["phase"] == "start"]
    assert [e["label"] for e in starts] == ["Crying"] * cries, "every cry of the night, nothing else"
    growth = long.peak_rss_mb - short.peak_rss_mb
    record_property("peak_rss_mb_5_min", round(short.peak_rss_mb, 1))
    record_property("peak_rss_mb_3_h", round(long.peak_rss_mb, 1))
    assert growth < RSS_GROWTH_LIMIT_MB, f"peak RSS {short.peak_rss_mb:.0f} MB -> {long.peak_rss_mb:.0f} MB"


# --- property: decode -> conditioning -> windows -> gate -> model input ------------------------------------

WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
CLIP_SECONDS = [2.5, 1.6, 1.0, 0.6, 0.01, 0.0]
"""A few windows, one, part of one, none (hypothesis draws the first ones more often)."""
JITTER_FRAMES = 100
PROPERTY_EXAMPLES = 80
KNOWN_REASONS = {*PASS_REASONS, REASON_SILENCE, REASON_BELOW_FLOOR}


@st.composite
def hostile_audio(draw) -> tuple[np.ndarray, int, str]:
    """(frames, channels) float samples, a rate and a WAV subtype: silence to far over full scale, DC,
    bursts, and for float files NaN / Inf."""
    rate = draw(st.integers(8000, 96000))
    channels = draw(st.integers(1, 8))
    subtype = draw(st.sampled_from(WAV_SUBTYPES))
    seconds = draw(st.sampled_from(CLIP_SECONDS))  # integers() would mostly give clips shorter than a window
    frames = int(seconds * rate) + draw(st.integers(0, JITTER_FRAMES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    level = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.3, 1.0, 8.0]))
    data = level * rng.uniform(-1, 1, (frames, channels)) + draw(st.sampled_from([0.0, 0.5, -1.0]))
    if frames and draw(st.booleans()):  # a loud burst somewhere
        start = int(rng.integers(0, frames))
        data[start:start + rate // 4] *= 100.0
    if subtype in ("FLOAT", "DOUBLE") and frames and draw(st.booleans()):
        for value in (np.nan, np.inf, -np.inf):
            data[rng.integers(0, frames, size=max(1, frames // 100)), rng.integers(0, channels)] = value
    return data, rate, subtype


@st.composite
def gate_settings(draw) -> tuple[GateConfig, float]:
    """The gate as shipped, or with its floor known at once (so the floor-relative branches run too)."""
    warmup = draw(st.sampled_from([GateConfig().noise_floor_warmup_seconds, 0.0]))
    highpass = draw(st.sampled_from([GateConfig().highpass_hz, 0.0]))
    hop = draw(st.sampled_from([0.1, 0.5, 0.975]))
    return GateConfig(noise_floor_warmup_seconds=warmup, highpass_hz=highpass), hop


def assert_gate_and_model_input_sane(blocks, gate_cfg: GateConfig, hop_seconds: float) -> int:
    """Windows over the blocks through the gate and prepare_window; the number of windows."""
    windower = SlidingWindower(hop_samples_from_seconds(hop_seconds))
    gate = Gate(gate_cfg)
    count = 0
    for block in blocks:
        for window in windower.push(block):
            decision = gate.assess(window)
            count += 1
            assert isinstance(decision.passed, bool) and decision.reason in KNOWN_REASONS
            assert decision.passed == (decision.reason in PASS_REASONS)
            levels = [decision.level_dbfs, decision.peak_dbfs, decision.noise_floor_dbfs, decision.band_level_dbfs]
            assert np.all(np.isfinite(levels)), decision
            assert 0.0 <= decision.voiced_fraction <= 1.0
            prepared = prepare_window(window.samples, PreprocessConfig())
            assert prepared.dtype == np.float32 and prepared.shape == (WINDOW_SAMPLES,)
            assert np.all(np.isfinite(prepared)) and np.max(np.abs(prepared)) <= 1.0
    return count


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_audio(), gate_settings())
def test_any_wav_file_decodes_and_gates_to_finite_levels(audio, gate):
    data, rate, subtype = audio
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(str(path), data, rate, subtype=subtype)
        source = FileReplaySource([path], AudioConfig(), PreprocessConfig())
        blocks = [block.samples for block in source]

    windows = assert_gate_and_model_input_sane(blocks, *gate)
    delivered = sum(b.size for b in blocks)
    assert delivered == pytest.approx(len(data) * SAMPLE_RATE / rate, abs=RESAMPLE_TOLERANCE)
    assert windows == max(0, (delivered - WINDOW_SAMPLES) // hop_samples_from_seconds(gate[1]) + 1)


@st.composite
def raw_capture_blocks(draw) -> tuple[list[np.ndarray], int]:
    """What a sound card callback may hand over: any block sizes and channel counts, any float32 values."""
    rate = draw(st.sampled_from([8000, 16000, 44100, 48000, 96000]))
    channels = draw(st.integers(1, 8))
    values = st.floats(width=32, allow_nan=True, allow_infinity=True)
    special = draw(st.lists(values, min_size=1, max_size=8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    blocks = []
    block_frames = st.one_of(st.integers(0, 64), st.integers(rate // 20, rate // 2))  # tiny and ordinary
    for frames in draw(st.lists(block_frames, min_size=1, max_size=12)):
        block = (draw(st.sampled_from([0.0, 1e-4, 0.5, 2.0])) * rng.standard_normal((frames, channels)))
        block = block.astype(np.float32)
        if frames:
            block.flat[rng.integers(0, block.size, size=len(special))] = special
        blocks.append(block)
    return blocks, rate


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_capture_blocks(), gate_settings())
def test_any_capture_block_conditions_and_gates_to_finite_levels(capture, gate):
    raw_blocks, rate = capture
    conditioner = Conditioner(rate, PreprocessConfig())
    blocks = [conditioner.process(block) for block in raw_blocks] + [conditioner.flush()]
    assert all(np.all(np.isfinite(b)) and np.all(np.abs(b) <= 1.0) for b in blocks)
    assert_gate_and_model_input_sane(blocks, *gate)


# --- models: missing, corrupt, not what the manifest says -------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(manifest: Path, change) -> None:
    document = json.loads(manifest.read_text())
    change(document["models"]["yamnet"])
    manifest.write_text(json.dumps(document))


def yamnet_file(manifest: Path) -> Path:
    return manifest.parent / json.loads(manifest.read_text())["models"]["yamnet"]["variants"]["float"]["file"]


def remove_model(manifest: Path) -> None:
    yamnet_file(manifest).unlink()


def corrupt_model(manifest: Path) -> None:
    flip_a_byte(yamnet_file(manifest))


def wrong_hash(manifest: Path) -> None:
    edit_manifest(manifest, lambda entry: entry["variants"]["float"].update(sha256="0" * 64))


def wrong_window(manifest: Path) -> None:
    edit_manifest(manifest, lambda entry: entry["input"].update(window_samples=16000))


def broken_model_with_matching_hash(manifest: Path) -> None:
    """Damaged after the export hashed it, and re-hashed: only loading it can tell."""
    model = yamnet_file(manifest)
    model.write_bytes(model.read_bytes()[:1000])
    edit_manifest(manifest, lambda entry: entry["variants"]["float"].update(sha256=sha256_file(model)))


def garbled_manifest(manifest: Path) -> None:
    manifest.write_text(manifest.read_text()[:100])


MODEL_FILE, MANIFEST_FILE = "yamnet_classifier.onnx", "manifest.json"


@pytest.mark.parametrize("damage, words, named", [
    (remove_model, "is missing", MODEL_FILE),
    (corrupt_model, "does not match the manifest", MODEL_FILE),
    (wrong_hash, "does not match the manifest", MODEL_FILE),
    (wrong_window, "does not match 16000 Hz / 15600 samples", MANIFEST_FILE),
    (broken_model_with_matching_hash, "cannot load ONNX model", MODEL_FILE),
    (garbled_manifest, "is unreadable", MANIFEST_FILE),
])
def test_bad_models_stop_replay_and_classify_with_one_line(tmp_path, fake_models, damage, words, named):
    clip = tmp_path / "cry.wav"
    sf.write(str(clip), cry(SAMPLE_RATE * 3, SAMPLE_RATE, 1), SAMPLE_RATE)
    damage(fake_models)
    config = str(write_config(tmp_path, fake_models))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda command: cli(command, str(clip), "--config", config), ["replay", "classify"]))
    for result in results:
        assert result.returncode == 1, result.stderr
        [problem] = problem_lines(result.stderr)
        assert words in problem and str(fake_models.parent / named) in problem, problem
        assert TRACEBACK not in result.stderr and result.stdout == ""


# --- config: a clear error naming the key, exit 2, before anything starts --------------------------------

BAD_CONFIGS = {
    "unknown key": ("mqtt:\n  colour: red\n", "mqtt.colour", 3, "unknown key"),
    "wrong type": ("fusion:\n  enter_threshold: high\n", "fusion.enter_threshold", 4, "expected a number"),
    "out of range": ("gate:\n  vad_aggressiveness: 7\n", "gate.vad_aggressiveness", 4, "between 0 and 3"),
}


@pytest.mark.parametrize("command", ["run", "replay", "classify"])
@pytest.mark.parametrize("kind", list(BAD_CONFIGS))
def test_bad_config_exits_2_naming_the_key_before_starting(tmp_path, monkeypatch, capsys, command, kind):
    """In-process (``monitor.cli.main``): a command that got past the config would call its handler."""
    text, key, line, words = BAD_CONFIGS[kind]
    outbox = tmp_path / "state" / "outbox.sqlite"
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  outbox_path: {outbox}\n" + text.replace("mqtt:\n", ""))
    for handler in ("run_live", "run_replay", "classify_files"):
        monkeypatch.setattr(app, handler, lambda *_: pytest.fail(f"`{command}` started with a bad config"))
    clip = tmp_path / "never-opened.wav"
    args = [command, "--config", str(config)] + ([] if command == "run" else [str(clip)])

    assert cli_main(args) == 2
    out, err = capsys.readouterr()
    [problem] = err.splitlines()
    assert problem.startswith(f"{PROBLEM_PREFIX}config key '{key}' (line {line}): ") and words in problem
    assert out == "" and not outbox.parent.exists(), "nothing started"

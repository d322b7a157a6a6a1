"""Hostile and unusual audio through replay: one-line errors, finite bounded output, constant memory."""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.audiofile import AudioFileError
from monitor.capture import FileReplaySource
from monitor.config import AudioConfig, PreprocessConfig
from tests.helpers.audio import RESAMPLE_TOLERANCE, assert_contiguous, expected_samples, tone, write_audio


def replay(*paths: Path, block_seconds: float = 0.1, **kwargs) -> np.ndarray:
    source = FileReplaySource(list(paths), AudioConfig(block_seconds=block_seconds), PreprocessConfig(), **kwargs)
    blocks = list(source)
    assert_contiguous(blocks)
    return np.concatenate([b.samples for b in blocks]) if blocks else np.zeros(0, np.float32)


def assert_clean(samples: np.ndarray) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.all(np.isfinite(samples))
    assert np.all(np.abs(samples) <= 1.0)


def assert_one_line_error(error: AudioFileError, path: Path, reason: str) -> None:
    message = str(error)
    assert str(path) in message and reason in message
    assert "\n" not in message


# --- files that are not audio --------------------------------------------------------------------


def make_empty(path: Path) -> None:
    path.write_bytes(b"")


def make_truncated_header(path: Path) -> None:
    write_audio(path, 0.5, 16000)
    path.write_bytes(path.read_bytes()[:20])


def make_text(path: Path) -> None:
    path.write_text("this is a shopping list, not a recording\n" * 20)


@pytest.mark.parametrize("make,reason", [
    (make_empty, "empty file"),
    (make_truncated_header, "not a readable audio file"),
    (make_text, "not a readable audio file"),
])
def test_unreadable_file_raises_one_line_error(tmp_path, make, reason):
    path = tmp_path / "recording.wav"
    make(path)

    with pytest.raises(AudioFileError) as error:
        replay(path)

    assert_one_line_error(error.value, path, reason)


def test_missing_file_raises_one_line_error(tmp_path):
    path = tmp_path / "gone.wav"
    with pytest.raises(AudioFileError) as error:
        replay(path)
    assert_one_line_error(error.value, path, "no such file")


def test_bad_file_between_good_ones_is_reported_and_replay_goes_on(tmp_path):
    good_a, bad, good_b = tmp_path / "a.wav", tmp_path / "bad.wav", tmp_path / "b.wav"
    frames_a = write_audio(good_a, 0.6, 16000)
    make_text(bad)
    frames_b = write_audio(good_b, 0.4, 48000)
    errors: list[AudioFileError] = []
    source = FileReplaySource([good_a, bad, good_b], AudioConfig(), PreprocessConfig(), on_error=errors.append)

    blocks = list(source)

    assert [e.path for e in errors] == [str(bad)]
    assert [s.error is not None for s in source.segments] == [False, True, False]
    assert source.segments[1].start_seconds == source.segments[1].end_seconds == source.segments[2].start_seconds
    assert_contiguous(blocks)
    expected = expected_samples(frames_a, 16000) + expected_samples(frames_b, 48000)
    assert sum(b.samples.size for b in blocks) == pytest.approx(expected, abs=2 * RESAMPLE_TOLERANCE)


def test_without_on_error_the_bad_file_stops_replay_after_the_good_audio(tmp_path):
    good, bad = tmp_path / "a.wav", tmp_path / "bad.wav"
    write_audio(good, 0.6, 16000)
    make_empty(bad)
    source = FileReplaySource([good, bad, good], AudioConfig(), PreprocessConfig())
    blocks = []

    with pytest.raises(AudioFileError, match="empty file"):
        for block in source:
            blocks.append(block)

    assert blocks and source.segments[-1].error == "empty file"


# --- odd but decodable audio ---------------------------------------------------------------------


def test_truncated_data_decodes_what_is_there(tmp_path):
    path = tmp_path / "cut.wav"
    write_audio(path, 2.0, 16000, channels=2, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still claims 2 s
    present_frames = sf.info(str(path)).frames

    samples = replay(path)

    assert_clean(samples)
    assert present_frames < 2 * 16000
    assert samples.size == pytest.approx(present_frames, abs=RESAMPLE_TOLERANCE)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_nan_and_inf_samples_become_silence(tmp_path, subtype):
    rate = 16000
    broken = np.full(rate, np.nan, np.float32)
    broken[::7] = np.inf
    broken[::11] = -np.inf
    signal = np.concatenate([broken, tone(rate, rate)[:, 0]])
    path = tmp_path / "nan.wav"
    sf.write(str(path), signal, rate, subtype=subtype)

    samples = replay(path)

    assert_clean(samples)
    assert samples.size == pytest.approx(signal.size, abs=RESAMPLE_TOLERANCE)
    assert np.max(np.abs(samples[: rate // 2])) == 0.0, "the broken second should be silence"
    assert np.max(np.abs(samples[rate + rate // 4:])) > 0.4, "the tone after it should survive"


@pytest.mark.parametrize("subtype,amplitude", [("PCM_16", 1.0), ("PCM_U8", 1.0), ("FLOAT", 4.0)])
def test_full_scale_and_over_range_audio_stays_within_full_scale(tmp_path, subtype, amplitude):
    rate = 44100
    square = amplitude * np.sign(np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)
    path = tmp_path / "clipped.wav"
    sf.write(str(path), square, rate, subtype=subtype)

    samples = replay(path)

    assert_clean(samples)
    assert np.max(np.abs(samples)) > 0.9
    assert samples.size == pytest.approx(expected_samples(rate, rate), abs=RESAMPLE_TOLERANCE)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 88200, 96000])
@pytest.mark.parametrize("channels", [1, 2, 4, 8])
def test_any_rate_and_channel_count_becomes_16k_mono(tmp_path, rate, channels):
    path = tmp_path / "clip.wav"
    frames = write_audio(path, 0.8, rate, channels, subtype="PCM_24")

    samples = replay(path)

    assert_clean(samples)
    assert samples.size == pytest.approx(expected_samples(frames, rate), abs=RESAMPLE_TOLERANCE)


def test_opposite_channels_downmix_to_silence_not_noise(tmp_path):
    rate = 48000
    left = tone(rate, rate)[:, 0]
    path = tmp_path / "phase.wav"
    sf.write(str(path), np.stack([left, -left], axis=1), rate, subtype="FLOAT")

    samples = replay(path)

    assert_clean(samples)
    assert np.max(np.abs(samples)) < 1e-6


def test_file_blocks_are_the_requested_size_and_the_whole_file(tmp_path):
    from monitor.audiofile import READ_SECONDS, iter_file_blocks

    rate, channels = 22050, 2
    path = tmp_path / "odd.flac"
    frames = write_audio(path, 2.5 * READ_SECONDS + 0.037, rate, channels)
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)

    blocks = [block for block, block_rate in iter_file_blocks(path, 0.1) if block_rate == rate]

    sizes = {len(block) for block in blocks[:-1]}
    assert sizes == {round(0.1 * rate)} and 0 < len(blocks[-1]) <= round(0.1 * rate)
    assert sum(map(len, blocks)) == frames
    assert np.array_equal(np.concatenate(blocks), whole)


def test_conditioned_blocks_are_whole_blocks_of_the_samples_the_whole_file_conditions_to(tmp_path):
    """A replay conditions each read whole and cuts the result into blocks afterwards (cheaper than conditioning
    every 0.1 s block): the blocks are exactly ``block_seconds`` (the last one shorter) and hold the very samples
    of conditioning the whole file in one call, also for a rate the chain resamples by an odd ratio."""
    from monitor.audiofile import READ_SECONDS, iter_conditioned_blocks
    from monitor.preprocess import condition_clip

    rate, channels = 22050, 2
    path = tmp_path / "odd.flac"
    write_audio(path, 2.5 * READ_SECONDS + 0.037, rate, channels)
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
    cfg = PreprocessConfig()

    blocks = list(iter_conditioned_blocks(path, cfg, 0.1))

    assert {block.size for block in blocks[:-1]} == {1600} and 0 < blocks[-1].size <= 1600
    assert np.array_equal(np.concatenate(blocks), condition_clip(whole, rate, cfg))


def test_a_decoding_error_mid_file_still_delivers_what_was_conditioned_before_it(tmp_path, monkeypatch):
    """The part of a read left over after its whole blocks is handed out before the error, not dropped."""
    import monitor.audiofile as audiofile
    from monitor.preprocess import Conditioner

    rate = 16000
    path = tmp_path / "tone.wav"
    write_audio(path, 1.0, rate, 1)
    first_read = sf.read(str(path), dtype="float32", always_2d=True)[0][:12345]

    def failing_reads(path, block_seconds):
        yield first_read, rate, round(block_seconds * rate)
        raise AudioFileError(path, "decoding failed mid-file (test)")

    monkeypatch.setattr(audiofile, "_iter_file_reads", failing_reads)
    cfg = PreprocessConfig()
    delivered = []
    with pytest.raises(AudioFileError, match="mid-file"):
        for block in audiofile.iter_conditioned_blocks(path, cfg, 0.1):
            delivered.append(block)

    assert np.array_equal(np.concatenate(delivered), Conditioner(rate, cfg).process(first_read))
    assert delivered[-1].size < 1600  # the leftover, not only the whole blocks


def test_reads_hold_every_whole_block_that_fits_in_the_read_size():
    from monitor.audiofile import READ_SECONDS, frames_per_read

    assert frames_per_read(1600, 16000) == int(READ_SECONDS * 16000)  # 0.1 s blocks: 20 per read, not 19
    assert frames_per_read(2205, 22050) == int(READ_SECONDS * 22050)
    assert frames_per_read(700, 1000) == 1400  # whole blocks only
    assert frames_per_read(5000, 1000) == 5000  # a block longer than a read is still read whole


# --- a multi-hour file in constant memory --------------------------------------------------------

LONG_FILE_MINUTES = 30
LONG_FILE_RATE = 8000


def write_long_file(path: Path, minutes: int, rate: int) -> int:
    """Written block by block, so the test itself never holds the whole recording either."""
    block = tone(rate * 10, rate, amplitude=0.3)
    blocks = minutes * 6
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as handle:
        for _ in range(blocks):
            handle.write(block)
    return blocks * block.shape[0]


def test_long_file_is_streamed_in_constant_memory(tmp_path):
    path = tmp_path / "night.wav"
    frames = write_long_file(path, LONG_FILE_MINUTES, LONG_FILE_RATE)
    decoded_bytes = expected_samples(frames, LONG_FILE_RATE) * np.dtype(np.float32).itemsize
    source = FileReplaySource([path], AudioConfig(block_seconds=1.0), PreprocessConfig())

    tracemalloc.start()
    try:
        delivered = 0
        last_end = 0.0
        for block in source:
            delivered += block.samples.size
            last_end = block.end_seconds
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert delivered == pytest.approx(expected_samples(frames, LONG_FILE_RATE), abs=RESAMPLE_TOLERANCE)
    assert last_end == pytest.approx(LONG_FILE_MINUTES * 60, abs=1e-3)
    assert peak < decoded_bytes / 100, f"peak {peak / 1e6:.1f} MB while replaying {decoded_bytes / 1e6:.0f} MB"


# --- property: any decodable file -> finite, bounded 16 kHz mono of the right length ------------

WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
FLAC_SUBTYPES = ["PCM_S8", "PCM_16", "PCM_24"]
FLAC_RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000]
MAX_SECONDS = 1.2


@st.composite
def audio_files(draw):
    container = draw(st.sampled_from(["WAV", "FLAC"]))
    if container == "WAV":
        subtype = draw(st.sampled_from(WAV_SUBTYPES))
        rate = draw(st.integers(8000, 96000))
        min_frames = 0
    else:
        subtype = draw(st.sampled_from(FLAC_SUBTYPES))
        rate = draw(st.sampled_from(FLAC_RATES))
        min_frames = 1  # libsndfile cannot reopen a FLAC file without frames
    channels = draw(st.integers(1, 8))
    frames = draw(st.integers(min_frames, int(MAX_SECONDS * rate)))
    seed = draw(st.integers(0, 2**32 - 1))
    level = draw(st.sampled_from([0.0, 1e-4, 0.5, 1.0, 3.0]))
    poison = subtype in ("FLOAT", "DOUBLE") and draw(st.booleans())
    return container, subtype, rate, channels, frames, seed, level, poison


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio_files())
def test_decode_and_conditioning_always_give_clean_16k_mono(spec):
    container, subtype, rate, channels, frames, seed, level, poison = spec
    rng = np.random.default_rng(seed)
    data = (level * rng.uniform(-1, 1, (frames, channels))).astype(np.float32)
    if poison and frames:
        data[rng.integers(0, frames, size=max(1, frames // 50)), rng.integers(0, channels)] = np.nan
        data[rng.integers(0, frames), 0] = np.inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"clip.{container.lower()}"
        sf.write(str(path), data, rate, subtype=subtype, format=container)

        samples = replay(path)

    assert_clean(samples)
    assert samples.size == pytest.approx(expected_samples(frames, rate), abs=RESAMPLE_TOLERANCE)

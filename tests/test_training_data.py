"""Dataset loading, grouped split and training windows."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.config import GateConfig, PreprocessConfig
from monitor.constants import LABELS, SAMPLE_RATE, WINDOW_SAMPLES
from monitor.paths import default_manifest_csv
from tests.helpers.training_data import synthetic_clips, write_tone
from training.data import FOLDER_SOURCE, Clip, load_dataset, manifest_sha256
from training.split import SPLITS, load_or_make_split, load_split, make_split, read_split_header, save_split
from training.windows import active_window_mask, build_window_set, training_windows

HEADER = "path,label,source,group,license,duration_s,sample_rate,orig_sr,origin\n"
SHARED_MANIFEST = default_manifest_csv()
needs_shared = pytest.mark.skipif(not SHARED_MANIFEST.is_file(), reason="shared data not available")


def write_csv(folder: Path, rows: list[str]) -> Path:
    csv_path = folder / "manifest.csv"
    csv_path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return csv_path


# --- load_dataset ----------------------------------------------------------------------------

def test_csv_maps_dataset_and_product_labels(tmp_path):
    for name in ("a", "b", "c"):
        write_tone(tmp_path / "audio" / f"{name}.flac")
    csv_path = write_csv(tmp_path, [
        "audio/a.flac,cry,src1,g1,MIT,1.0,8000,8000,x",
        "audio/b.flac,Screaming,src2,g2,MIT,,,,",
        "audio/c.flac,NORMAL,src3,g3,MIT,1.0,8000,44100,x",
    ])
    clips = load_dataset(csv_path)
    assert [c.label for c in clips] == ["Crying", "Screaming", "Normal"]
    assert clips[0].path == (tmp_path / "audio" / "a.flac").resolve()
    assert clips[0].duration_s == 1.0 and clips[0].sample_rate == 8000
    assert clips[1].duration_s is None and clips[1].sample_rate is None
    assert [c.group for c in clips] == ["g1", "g2", "g3"]


def test_csv_unknown_label_names_file_and_line(tmp_path):
    write_tone(tmp_path / "a.flac")
    csv_path = write_csv(tmp_path, ["a.flac,cry,s,g,MIT,1,8000,8000,x", "a.flac,laugh,s,g,MIT,1,8000,8000,x"])
    with pytest.raises(ValueError, match=r"manifest\.csv:3: unknown label 'laugh'"):
        load_dataset(csv_path)


def test_csv_missing_column_is_named(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label,source\nx.flac,cry,s\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column.*group"):
        load_dataset(csv_path)


def test_csv_missing_audio_file_is_named(tmp_path):
    csv_path = write_csv(tmp_path, ["nowhere.flac,cry,s,g,MIT,1,8000,8000,x"])
    with pytest.raises(ValueError, match=r"manifest\.csv:2: audio file not found: .*nowhere\.flac"):
        load_dataset(csv_path)


def test_folder_tree_labels_and_groups(tmp_path):
    write_tone(tmp_path / "crying" / "one.wav")
    write_tone(tmp_path / "crying" / "night2" / "two.flac")
    write_tone(tmp_path / "Normal" / "room.ogg")
    clips = {c.path.name: c for c in load_dataset(tmp_path)}
    assert clips["one.wav"].label == "Crying" and clips["one.wav"].group == "crying/one"
    assert clips["two.flac"].group == "night2"
    assert clips["room.ogg"].label == "Normal"
    assert all(c.source == FOLDER_SOURCE for c in clips.values())


def test_folder_with_unknown_label_folder_fails(tmp_path):
    write_tone(tmp_path / "barking" / "x.wav")
    with pytest.raises(ValueError, match="barking.*not a label"):
        load_dataset(tmp_path)


def test_manifest_hash_tracks_content(tmp_path):
    write_tone(tmp_path / "crying" / "a.wav")
    before = manifest_sha256(tmp_path)
    write_tone(tmp_path / "crying" / "b.wav")
    assert manifest_sha256(tmp_path) != before
    csv_path = write_csv(tmp_path, ["crying/a.wav,cry,s,g,MIT,1,8000,8000,x"])
    first = manifest_sha256(csv_path)
    write_csv(tmp_path, ["crying/a.wav,normal,s,g,MIT,1,8000,8000,x"])
    assert manifest_sha256(csv_path) != first


# --- split -----------------------------------------------------------------------------------

def assert_valid_split(clips: list[Clip], split: dict[str, list[Clip]], ratio_tolerance: float) -> None:
    assert sorted(str(c.path) for part in split.values() for c in part) == sorted(str(c.path) for c in clips)
    owner: dict[str, set[str]] = collections.defaultdict(set)
    for name, part in split.items():
        for clip in part:
            owner[clip.group].add(name)
    assert all(len(names) == 1 for names in owner.values()), "a group appears in two splits"
    for label in LABELS:
        total = sum(c.label == label for c in clips)
        for name, ratio in zip(SPLITS, (0.7, 0.15, 0.15), strict=True):
            share = sum(c.label == label for c in split[name]) / total
            assert abs(share - ratio) <= ratio_tolerance, (label, name, share)


def test_split_synthetic_grouped_stratified_deterministic():
    clips = synthetic_clips()
    split = make_split(clips, seed=7)
    assert_valid_split(clips, split, ratio_tolerance=0.06)
    assert make_split(list(reversed(clips)), seed=7) == split
    assert make_split(clips, seed=8) != split
    for source in ("phone", "web", "speech", "noise"):  # >= 3 groups: represented everywhere
        assert all(any(c.source == source for c in split[name]) for name in SPLITS), source


@needs_shared
def test_split_shared_manifest():
    clips = load_dataset(SHARED_MANIFEST)
    split = make_split(clips, seed=1234)
    assert_valid_split(clips, split, ratio_tolerance=0.06)
    assert make_split(clips, seed=1234) == split
    for source in ("donateacry", "scream-detector-screams", "fsdd-speech", "esc50-noise", "ms-snsd-clean-speech"):
        assert all(any(c.source == source for c in split[name]) for name in SPLITS), source


def test_split_save_load_and_remake_on_manifest_change(tmp_path):
    clips = synthetic_clips()
    path = tmp_path / "split.json"
    split = load_or_make_split(clips, path, seed=3, manifest_hash="aaa")
    assert read_split_header(path) == {"seed": 3, "manifest_sha256": "aaa"}
    assert load_split(path, clips) == split
    stored = json.loads(path.read_text())
    assert all(not p.startswith("/") for p in stored["splits"]["train"])  # relative paths
    save_split({name: part[:1] for name, part in split.items()}, path, seed=3, manifest_hash="aaa")
    assert len(load_or_make_split(clips, path, seed=3, manifest_hash="aaa")["train"]) == 1  # reused as is
    remade = load_or_make_split(clips, path, seed=3, manifest_hash="bbb")
    assert remade == split and read_split_header(path)["manifest_sha256"] == "bbb"


def test_load_split_rejects_clips_not_in_dataset(tmp_path):
    clips = synthetic_clips()
    path = tmp_path / "split.json"
    save_split(make_split(clips), path)
    with pytest.raises(ValueError, match="not in the dataset"):
        load_split(path, [c for c in clips if c.source != "laugh"])


# --- windows ---------------------------------------------------------------------------------

def voiced_burst(seconds: float, f0: float = 400.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))).astype(np.float32)


def cry_with_pauses() -> np.ndarray:
    """1 s voiced burst, 2 s silence, 1 s burst, 2 s near-silent hiss."""
    rng = np.random.default_rng(0)
    hiss = (1e-4 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    return np.concatenate([voiced_burst(1.0), np.zeros(2 * SAMPLE_RATE, np.float32), voiced_burst(1.0), hiss])


def test_training_windows_drop_pauses_of_alert_clips():
    clip = cry_with_pauses()
    hop = SAMPLE_RATE // 2
    mask = active_window_mask(clip, "Crying", hop, GateConfig())
    starts = np.arange(len(mask)) * hop / SAMPLE_RATE
    assert mask[starts == 0.0].all() and mask[starts == 3.0].all()
    assert not mask[(starts >= 1.0) & (starts <= 2.0)].any()  # windows inside the silence
    assert not mask[starts >= 4.0].any()  # hiss
    kept = training_windows(clip, "Screaming", hop, GateConfig())
    assert len(kept) == int(mask.sum())
    assert all(w.shape == (WINDOW_SAMPLES,) and w.dtype == np.float32 for w in kept)


def test_training_windows_keep_everything_of_normal_clips():
    clip = cry_with_pauses()
    windows = training_windows(clip, "Normal", SAMPLE_RATE // 2, GateConfig())
    assert len(windows) == len(active_window_mask(clip, "Crying", SAMPLE_RATE // 2, GateConfig()))


def test_build_window_set_is_cached_and_labelled(tmp_path):
    sf.write(tmp_path / "cry.wav", cry_with_pauses(), SAMPLE_RATE)
    sf.write(tmp_path / "room.wav", np.zeros(2 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    clips = [Clip(tmp_path / "cry.wav", "Crying", "g1", "s", None, None),
             Clip(tmp_path / "room.wav", "Normal", "g2", "s", None, None)]
    cache = tmp_path / "cache"
    windows = build_window_set(clips, PreprocessConfig(), SAMPLE_RATE // 2, cache_dir=cache, progress=False)
    assert windows.windows.shape[1] == WINDOW_SAMPLES and windows.windows.dtype == np.float32
    assert set(windows.labels[windows.clip_index == 0]) == {LABELS.index("Crying")}
    assert windows.active[windows.clip_index == 1].all()
    assert 0 < windows.active[windows.clip_index == 0].sum() < (windows.clip_index == 0).sum()
    assert len(list(cache.glob("*.npz"))) == 1
    again = build_window_set(clips, PreprocessConfig(), SAMPLE_RATE // 2, cache_dir=cache, progress=False)
    assert np.array_equal(again.windows, windows.windows) and np.array_equal(again.groups, windows.groups)
    build_window_set(clips, PreprocessConfig(bandwidth_hz=None), SAMPLE_RATE // 2, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 2  # other settings, other cache entry


def test_the_training_windows_follow_the_training_hop_not_the_live_one(tmp_path: Path):
    """A denser live hop must not re-cut (and re-embed, twice as many) training windows: only
    window.training_hop_seconds keys the YAMNet features."""
    from monitor.config import parse_config
    from training.train_yamnet import HeadConfig, _feature_key
    from training.yamnet_features import BaseModel

    base_file = tmp_path / "yamnet.onnx"
    base_file.write_bytes(b"stand-in bytes: only their hash enters the key")
    base = BaseModel(base_file, batched=True)

    def key(yaml: str) -> str:
        return _feature_key([], np.array([]), parse_config(yaml), HeadConfig(), 0, base)

    assert key("window:\n  hop_seconds: 0.25\n") == key("")
    assert key("window:\n  training_hop_seconds: 0.25\n") != key("")

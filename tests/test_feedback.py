"""Feedback that retrains: `nursery-monitor feedback` files an event's clip into a user dataset; feedback clips are
pinned to the train split; `build-models --data A --data B` trains on the union (each source keeps its own groups)
and the evaluation reports how the rebuilt models score the feedback clips."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.constants import FEEDBACK_CSV, LABELS
from monitor.model_manifest import MANIFEST_NAME
from monitor.paths import build_dir, default_manifest_csv, default_yamnet_tflite
from tests.helpers.daemon import REPO, cli, events_of, tone_scene, write_config
from tests.helpers.training_data import synthetic_clips, write_tone
from training.data import FEEDBACK_SOURCE, FOLDER_SOURCE, load_dataset, union_clips, write_union_manifest
from training.split import SPLITS, make_split

HAVE_TRAIN_DEPS = all(importlib.util.find_spec(m) for m in ("torch", "tf2onnx", "tensorflow"))
HAVE_SHARED = default_manifest_csv().is_file() and default_yamnet_tflite().is_file()
TINY_GROUPS_PER_LABEL = 12
"""Enough shared groups that val holds the 5 clips the Wav2Vec2 export's parity check needs."""
TINY_TUNE_HOURS = "0.05"
TINY_W2V_MINUTES = "0.2"


def false_alarm(tmp_path: Path, fake_models: Path) -> tuple[Path, dict]:
    """A Normal sound (the fake models' 'Crying' tone: not a baby) replayed with its clip saved where `run` keeps
    them (write_config's clips.directory): (config, end message)."""
    config = write_config(tmp_path, fake_models, clips={"feedback_directory": str(tmp_path / "user")})
    scene = tone_scene(tmp_path / "kettle.wav", [(None, 3.0), ("Crying", 3.0), (None, 4.0)])
    result = cli("replay", str(scene), "--config", str(config), "--events-jsonl", "-", "--quiet", "--save-clips",
                 str(tmp_path / "clips"))
    assert result.returncode == 0, result.stderr
    end = next(e for e in events_of(result.stdout) if e["phase"] == "end")
    assert end["label"] == "Crying" and end["clip"]
    return config, end


def feedback_rows(dataset: Path) -> list[dict]:
    with (dataset / FEEDBACK_CSV).open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the command ------------------------------------------------------------------------------------------------


def test_feedback_files_the_clip_with_its_provenance_and_can_be_corrected(tmp_path, fake_models):
    config, end = false_alarm(tmp_path, fake_models)
    clips_folder = tmp_path / "clips"

    result = cli("feedback", end["event_id"][:8], "normal", "--config", str(config))
    assert result.returncode == 0, result.stderr
    filed = tmp_path / "user" / "normal" / end["clip"]
    assert filed.read_bytes() == (clips_folder / end["clip"]).read_bytes()
    [row] = feedback_rows(tmp_path / "user")
    assert row == {"path": f"normal/{end['clip']}", "label": "normal", "event_id": end["event_id"],
                   "detected_label": "Crying", "confidence": str(end["confidence"]), "start_time": end["start_time"],
                   "device_id": "testroom", "filed_at": row["filed_at"]}

    again = cli("feedback", end["event_id"], "scream", "--config", str(config))
    assert again.returncode == 0 and "was filed under normal" in again.stdout
    assert not filed.exists() and (tmp_path / "user" / "scream" / end["clip"]).is_file()
    assert [r["label"] for r in feedback_rows(tmp_path / "user")] == ["scream"]


def test_feedback_for_an_unknown_event_is_one_clear_line(tmp_path, fake_models):
    config = write_config(tmp_path, fake_models)
    result = cli("feedback", "0123abcd", "normal", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"nursery-monitor: no clip of an event '0123abcd' in {tmp_path / 'clips'} (`nursery-monitor clips` lists them)"]


# --- the dataset: pinned to train, groups kept per source ------------------------------------------------------------


def user_folder(root: Path) -> Path:
    """Own recordings (cry/kitchen/*.wav, normal/a.wav) and one filed feedback clip (normal/fb.flac)."""
    for rel in ("cry/kitchen/1.wav", "cry/kitchen/2.wav", "normal/a.wav", "normal/fb.flac"):
        write_tone(root / rel)
    (root / FEEDBACK_CSV).write_text("path,label,event_id\nnormal/fb.flac,normal,e1\n")
    return root


def test_feedback_clips_are_pinned_to_train_and_other_recordings_are_not(tmp_path):
    clips = {c.path.name: c for c in load_dataset(user_folder(tmp_path / "mine"))}
    assert (clips["fb.flac"].label, clips["fb.flac"].source, clips["fb.flac"].fixed_split) == \
        ("Normal", FEEDBACK_SOURCE, "train")
    assert all(clips[name].fixed_split is None and clips[name].source == FOLDER_SOURCE
               for name in ("1.wav", "2.wav", "a.wav"))


def test_pinned_clips_go_to_train_and_leave_the_rest_of_the_split_as_it_was():
    clips = synthetic_clips()
    corrections = [dataclasses.replace(c, path=Path(f"/fb/{i}.flac"), group=f"fb:{i}", source=FEEDBACK_SOURCE,
                                       fixed_split="train") for i, c in enumerate(clips[:5])]
    before = make_split(clips, seed=3)
    after = make_split(clips + corrections, seed=3)
    assert after["train"] == sorted(before["train"] + corrections, key=lambda c: str(c.path))
    assert all(after[name] == before[name] for name in SPLITS if name != "train")


def test_a_group_cannot_be_both_pinned_and_free():
    clips = synthetic_clips()
    with pytest.raises(ValueError, match="pinned to a split and others"):
        make_split([*clips, dataclasses.replace(clips[0], path=Path("/x.flac"), fixed_split="train")])


def test_union_keeps_each_sources_groups_and_round_trips_the_pins(tmp_path):
    shared = tmp_path / "shared"
    write_tone(shared / "normal" / "a.wav")  # same file layout and group name as the user's own recording
    user = user_folder(tmp_path / "mine")
    union = union_clips([shared, user])
    assert {c.group for c in union if c.path.name == "a.wav"} == {"shared:normal/a", "mine:normal/a"}

    manifest = write_union_manifest([shared, user], tmp_path / "build")
    assert write_union_manifest([shared, user], tmp_path / "build") == manifest, "named by content: stable"
    assert load_dataset(manifest) == union, "labels, groups, sources and pins survive the CSV"
    with pytest.raises(ValueError, match="same name"):
        union_clips([user, user])


# --- the round trip: false alarm -> feedback -> rebuild -> train split + evaluation --------------------------------


def tiny_shared_manifest(folder: Path) -> Path:
    """A few groups per label of the shared data, absolute paths (as test_yamnet_branch's tiny build)."""
    rows, seen = ["path,label,source,group"], {label: set() for label in LABELS}
    for clip in load_dataset(default_manifest_csv()):
        if clip.group not in seen[clip.label] and len(seen[clip.label]) < TINY_GROUPS_PER_LABEL:
            seen[clip.label].add(clip.group)
            rows.append(f"{clip.path},{clip.label},{clip.source},{clip.group}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "tiny.csv"


@pytest.mark.train
@pytest.mark.skipif(not (HAVE_TRAIN_DEPS and HAVE_SHARED),
                    reason="needs the train extra (torch, tf2onnx, tensorflow) and the shared files")
def test_a_false_alarm_filed_as_normal_is_trained_on_and_scored(tmp_path, fake_models, monkeypatch):
    config, end = false_alarm(tmp_path, fake_models)
    assert cli("feedback", end["event_id"], "normal", "--config", str(config)).returncode == 0

    build = tmp_path / "build"
    build.mkdir()
    for cached in build_dir().glob("yamnet_base.*"):  # the converted base model, if a build made it already
        shutil.copyfile(cached, build / cached.name)
    monkeypatch.setenv("NURSERY_BUILD", str(build))
    monkeypatch.setenv("NURSERY_MODELS", str(tmp_path / "models"))
    shared = tiny_shared_manifest(tmp_path / "shared")
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "build-models", "--data", str(shared),
                             "--data", str(tmp_path / "user"), "--w2v-minutes", TINY_W2V_MINUTES,
                             "--tune-hours", TINY_TUNE_HOURS],
                            capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]

    filed = (tmp_path / "user" / "normal" / end["clip"]).resolve()
    manifest = json.loads((tmp_path / "models" / MANIFEST_NAME).read_text())
    union = Path(manifest["training_data"]["source"])
    [clip] = [c for c in load_dataset(union) if c.path == filed]
    assert (clip.label, clip.fixed_split, clip.source) == ("Normal", "train", FEEDBACK_SOURCE)
    split = json.loads(Path(manifest["training_data"]["split_file"]).read_text())["splits"]
    assert [name for name in SPLITS if any(filed.as_posix().endswith(rel) for rel in split[name])] == ["train"]
    report = json.loads((build / "reports" / "eval" / "feedback.json").read_text())
    [scored] = report["per_clip"]
    assert (scored["path"], scored["label"], scored["split"]) == (str(filed), "Normal", "train")
    assert scored["predicted"] in LABELS and report["model_versions"] == {
        kind: entry["version"] for kind, entry in manifest["models"].items()}
    print(f"feedback clip after the rebuild: {scored['predicted']} ({scored['probs']})")

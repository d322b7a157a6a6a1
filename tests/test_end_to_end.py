"""End to end with the real models on held-out test clips of ../shared: a cry clip yields one Crying
event, a scream clip one Screaming event, a speech clip none; `classify` and `run_inference` agree.

Needs the built models (`make models`); `make test` builds them first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.paths import default_manifest_csv, models_dir
from training.data import load_dataset, manifest_sha256
from training.split import load_or_make_split, split_file_for

REPO = Path(__file__).resolve().parents[1]
CLIPS_PER_KIND = 3

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(not (models_dir() / "manifest.json").is_file(), reason="models not built: run `make models`"),
    pytest.mark.skipif(not default_manifest_csv().is_file(), reason="../shared/data not found"),
]


@pytest.fixture(scope="module")
def test_split():
    manifest = default_manifest_csv()
    digest = manifest_sha256(manifest)
    return load_or_make_split(load_dataset(manifest), split_file_for(digest), manifest_hash=digest)["test"]


def pick(clips, label: str, source: str | None = None) -> list[Path]:
    chosen = [c.path for c in clips if c.label == label and (source is None or c.source == source)]
    return chosen[:CLIPS_PER_KIND]


def replay_events(path: Path) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(path), "--no-mqtt",
                             "--events-jsonl", "-"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def starts(events: list[dict]) -> list[dict]:
    return [e for e in events if e["phase"] == "start"]


@pytest.mark.parametrize("label", ["Crying", "Screaming"])
def test_an_alert_clip_yields_one_event_of_its_label(test_split, label):
    clips = pick(test_split, label)
    assert clips, f"no {label} clip in the test split"
    for clip in clips:
        events = replay_events(clip)
        started = starts(events)
        assert [e["label"] for e in started] == [label], f"{clip.name}: {[(e['phase'], e['label']) for e in events]}"
        assert events[-1]["phase"] == "end" and events[-1]["event_id"] == started[0]["event_id"]


@pytest.mark.parametrize("source", ["ms-snsd-clean-speech", "fsdd-speech"])
def test_a_speech_clip_yields_no_event(test_split, source):
    clips = pick(test_split, "Normal", source)
    if not clips:
        pytest.skip(f"no {source} clip in this test split")
    for clip in clips:
        assert replay_events(clip) == [], clip.name


def test_classify_cli_and_run_inference_agree_on_held_out_clips(test_split):
    import monitor

    clips = pick(test_split, "Crying")[:2] + pick(test_split, "Screaming")[:2] + pick(test_split, "Normal")[:2]
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "classify", *map(str, clips), "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == [monitor.run_inference(clip) for clip in clips]
    assert labels == ["Crying", "Crying", "Screaming", "Screaming", "Normal", "Normal"]

"""export.build's step cache and install step (no training here: the actions are tiny stand-ins)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.build import EVAL_CODE, WAV2VEC2_EXPORT_CODE, BuildError, StepRunner, code_version, install
from export.module_graph import PROJECT_PACKAGES
from monitor.model_manifest import MANIFEST_NAME, read_manifest
from monitor.paths import REPO_ROOT
from tests.helpers.fake_models import write_fake_models

CODE = ("training.metrics",)


class CountingAction:
    """Writes ``out`` and counts how often it really ran."""

    def __init__(self, out: Path, text: str = "result"):
        self.out, self.text, self.calls = out, text, 0

    def __call__(self) -> dict:
        self.calls += 1
        self.out.write_text(self.text)
        return {"written": self.text}


def _run(tmp_path: Path, action: CountingAction, inputs: dict, force: bool = False):
    runner = StepRunner(tmp_path / "stamps", total=1, force=force)
    return runner.run("step", "a step", inputs, CODE, [action.out], action)


def test_unchanged_step_is_reused_with_its_result(tmp_path: Path):
    action = CountingAction(tmp_path / "out.txt")
    first = _run(tmp_path, action, {"x": 1})
    second = _run(tmp_path, action, {"x": 1})
    assert action.calls == 1
    assert not first.cached and second.cached
    assert second.result == {"written": "result"} and second.key == first.key


@pytest.mark.parametrize("change", ["inputs", "output edited", "output deleted", "force"])
def test_step_reruns_when_anything_it_depends_on_changed(tmp_path: Path, change: str):
    action = CountingAction(tmp_path / "out.txt")
    _run(tmp_path, action, {"x": 1})
    inputs, force = {"x": 1}, False
    if change == "inputs":
        inputs = {"x": 2}
    elif change == "output edited":
        action.out.write_text("tampered")
    elif change == "output deleted":
        action.out.unlink()
    else:
        force = True
    outcome = _run(tmp_path, action, inputs, force=force)
    assert action.calls == 2 and not outcome.cached
    assert action.out.read_text() == "result"


def test_later_step_follows_what_the_earlier_one_wrote_not_its_recipe(tmp_path: Path):
    """A training run cut by its time cap writes other weights from the same inputs: the export keyed on them
    must export again, not keep the model of the previous run."""
    train = CountingAction(tmp_path / "weights.bin", "run 1")
    export = CountingAction(tmp_path / "model.onnx")

    def build() -> tuple:
        runner = StepRunner(tmp_path / "stamps", total=2)
        trained = runner.run("train", "train", {"seed": 1}, CODE, [train.out], train)
        return trained, runner.run("export", "export", {"model": trained.made}, CODE, [export.out], export)

    first_train, _ = build()
    (tmp_path / "stamps" / "train.json").unlink()
    train.text = "run 2"
    second_train, second_export = build()
    assert second_train.key == first_train.key and second_train.made != first_train.made
    assert export.calls == 2 and not second_export.cached
    _, third_export = build()
    assert third_export.cached and export.calls == 2


def test_rerun_says_which_input_changed(tmp_path: Path, caplog):
    action = CountingAction(tmp_path / "out.txt")
    _run(tmp_path, action, {"seed": 1, "minutes": 10})
    with caplog.at_level("INFO", logger="export.build"):
        _run(tmp_path, action, {"seed": 1, "minutes": 3})
    assert "changed since the last build: input minutes" in caplog.text
    assert "input seed" not in caplog.text


def test_failed_step_names_itself_and_leaves_no_stamp(tmp_path: Path):
    def broken() -> dict:
        raise RuntimeError("parity 0.3 above tolerance 1e-4\nsecond line")

    runner = StepRunner(tmp_path / "stamps", total=1)
    with pytest.raises(BuildError, match=r"step 'export' \(export it\) failed: RuntimeError: parity 0.3") as info:
        runner.run("export", "export it", {}, CODE, [tmp_path / "never.onnx"], broken)
    assert "second line" not in str(info.value)
    assert not (tmp_path / "stamps" / "export.json").exists()


def test_step_that_does_not_produce_its_output_fails(tmp_path: Path):
    runner = StepRunner(tmp_path / "stamps", total=1)
    with pytest.raises(BuildError, match="did not produce"):
        runner.run("step", "a step", {}, CODE, [tmp_path / "missing.txt"], lambda: {})


def test_install_copies_files_and_is_idempotent(tmp_path: Path):
    staged = write_fake_models(tmp_path / "staging")
    document = json.loads(staged.read_text())
    out = tmp_path / "models"
    assert install(document, staged.parent, out) is True
    manifest = read_manifest(out / MANIFEST_NAME)
    assert {e.version for e in manifest.models.values()} == {e["version"] for e in document["models"].values()}
    before = (out / MANIFEST_NAME).stat().st_mtime_ns
    assert install({**document, "created": "later"}, staged.parent, out) is False
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == before
    (out / "yamnet_classifier.onnx").write_bytes(b"corrupt")
    assert install(document, staged.parent, out) is True
    read_manifest(out / MANIFEST_NAME)
    assert (out / "yamnet_classifier.onnx").read_bytes() == (staged.parent / "yamnet_classifier.onnx").read_bytes()


# --- a step's code version: every project module its entry modules import ---------------------------------

def _project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("entry, touched, reruns", [
    ("training.evaluate", "training/calibration.py", True),
    ("training.evaluate", "monitor/config.py", True),
    ("export.wav2vec2_onnx", "training/train_wav2vec2.py", True),
    ("training.evaluate", "monitor/mqtt.py", False),
])
def test_touching_an_imported_module_reruns_the_step(tmp_path: Path, entry: str, touched: str, reruns: bool):
    source_root = _project_copy(tmp_path)
    action = CountingAction(tmp_path / "out.txt")

    def run():
        runner = StepRunner(tmp_path / "stamps", total=1, source_root=source_root)
        return runner.run("step", "a step", {"x": 1}, (entry,), [action.out], action)

    run()
    with (source_root / touched).open("a") as handle:
        handle.write("\n# an edit\n")
    outcome = run()
    assert (action.calls, outcome.cached) == ((2, False) if reruns else (1, True))


def test_build_steps_cover_the_modules_they_import():
    assert {"training.calibration", "monitor.config", "monitor.classify"} <= set(code_version(EVAL_CODE))
    assert "training.train_wav2vec2" in code_version(WAV2VEC2_EXPORT_CODE)

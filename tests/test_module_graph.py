"""The project's modules import one another without a cycle (read statically by export.module_graph)."""

from __future__ import annotations

from pathlib import Path

from export.module_graph import direct_imports, import_closure, import_cycles


def test_no_import_cycle_among_the_project_modules():
    assert import_cycles() == []


def _write(root: Path, name: str, text: str) -> None:
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "__init__.py").touch()
    path.write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path):
    _write(tmp_path, "training.a", "from .b import thing\n")
    _write(tmp_path, "training.b", "def thing():\n    from training import a\n    return a\n")
    _write(tmp_path, "training.c", "import typing\nif typing.TYPE_CHECKING:\n    from .a import x\n")
    _write(tmp_path, "monitor.d", "import numpy\nfrom training.c import y\n")

    assert import_cycles(tmp_path) == [["training.a", "training.b"]]
    assert direct_imports("training.c", tmp_path) == frozenset(), "TYPE_CHECKING imports never run"
    assert import_closure(["monitor.d"], tmp_path) == ["monitor", "monitor.d", "training", "training.c"]

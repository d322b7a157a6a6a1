"""docs/ARCHITECTURE.md stays true: every signature it gives in backticks (``Name(params) -> Return`` or
``Class.method(params)``, in a bullet about a module) names a real object of that module with those parameters
(``...``: further optional ones follow) and that return annotation, as test_docs.py keeps the config keys true."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
BULLET = re.compile(r"^- ((?:`[\w/]+\.py`(?: / )?)+):")
MODULE = re.compile(r"`([\w/]+)\.py`")
SIGNATURE = re.compile(r"^(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\((?P<params>[^()]*)\)(?:\s*->\s*(?P<ret>.+))?$")
MORE = "..."


def _module_name(path: str) -> str:
    return (path if "/" in path else f"monitor/{path}").replace("/", ".")


def documented_signatures(text: str) -> list[tuple[list[str], str]]:
    """(modules of the bullet, backticked signature) for every bullet that starts with module files."""
    found, modules, bullet = [], None, []

    def close():
        if modules:
            spans = re.findall(r"`([^`]+)`", " ".join(bullet))
            found.extend((modules, " ".join(span.split())) for span in spans if SIGNATURE.match(" ".join(span.split())))

    for line in text.splitlines():
        if line.startswith("  ") and modules:
            bullet.append(line.strip())
            continue
        close()
        match = BULLET.match(line)
        modules = [_module_name(m) for m in MODULE.findall(match.group(1))] if match else None
        bullet = [line[match.end():]] if match else []
    close()
    return found


SIGNATURES = documented_signatures(DOC.read_text(encoding="utf-8"))


def _resolve(modules: list[str], name: str):
    for module in modules:
        obj = importlib.import_module(module)
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    pytest.fail(f"ARCHITECTURE.md names {name}, which is not in {', '.join(modules)}")


def test_the_document_gives_signatures_for_every_stage():
    names = {span.split("(")[0] for _, span in SIGNATURES}
    assert {"SlidingWindower.push", "Gate.assess", "load_classifiers", "fuse_window", "EventTracker.update",
            "Pipeline.run", "prepare_window"} <= names


@pytest.mark.parametrize("modules, span", SIGNATURES, ids=[span for _, span in SIGNATURES])
def test_documented_signature_matches_the_code(modules, span):
    match = SIGNATURE.match(span)
    obj = _resolve(modules, match["name"])
    signature = inspect.signature(obj)
    real = [p for p in signature.parameters.values() if p.name != "self"]
    documented = [p.strip() for p in match["params"].split(",") if p.strip()]
    open_ended = bool(documented) and documented[-1] == MORE
    documented = documented[:-1] if open_ended else documented
    names = [p.split("=")[0].strip() for p in documented]
    assert [p.name for p in real[:len(names)]] == names, f"{span}: the code has {signature}"
    if not open_ended:
        assert len(real) == len(names), f"{span}: the code has {signature}"
    for text, parameter in zip(documented, real, strict=False):
        if "=" in text:
            assert repr(parameter.default) == text.split("=", 1)[1].strip(), f"{span}: the code has {signature}"
    if match["ret"]:
        annotation = signature.return_annotation
        shown = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        assert shown == match["ret"].strip(), f"{span}: the code returns {shown}"

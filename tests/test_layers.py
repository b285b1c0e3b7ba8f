"""The house's plan, enforced: subpackages import only the layers below them, the store and the
views never import torch or training code, the library never imports streamlit, and every module
imports on its own.

Layers, bottom up (``kaviz/<layer>/``): core -> data, train, store -> measure, stages -> analysis;
views read only core and the store; ``cli.py``, ``launcher.py`` (with ``launch_progress.py`` and ``launch_records.py``) and ``report.py`` sit on top and may import anything.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import kaviz

ROOT = Path(__file__).resolve().parents[1]
KAVIZ = ROOT / "kaviz"

#: layer -> the layers it may import (besides itself and the package root's __version__).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "train": {"core"},
    "store": {"core"},
    "measure": {"core", "data", "train", "store"},  # store: atomic writes of spilled activations
    "stages": {"core", "data", "train", "store"},
    "analysis": {"core", "data", "train", "store", "measure"},
    "views": {"core", "store"},
}
TOP = {"cli", "launcher", "launch_progress", "launch_records", "report"}  # split out of the launcher
NO_TORCH = {"store", "views"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kaviz" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in a file, type-checking-only ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "kaviz":
                out += [(node.lineno, f"kaviz.{a.name}") for a in node.names]
    return out


def _modules() -> list[Path]:
    return sorted(KAVIZ.rglob("*.py"))


def test_every_module_lives_in_a_layer_or_on_top():
    loose = [p.name for p in KAVIZ.glob("*.py") if p.stem not in TOP | {"__init__"}]
    assert not loose, f"modules outside the layer folders: {loose}"
    folders = {p.name for p in KAVIZ.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(ALLOWED), folders


def test_imports_go_down_the_layers():
    bad = []
    for path in _modules():
        rel = path.relative_to(KAVIZ)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        if layer is None:
            continue  # cli, launcher, __init__
        for line, mod in _imports(path):
            target = _layer(mod)
            if target is None or target == layer or target.startswith("__"):
                continue
            if target in TOP or target not in ALLOWED[layer]:
                bad.append(f"kaviz/{rel}:{line} ({layer}) imports {mod} ({target})")
    assert not bad, "\n".join(bad)


def test_store_and_views_never_import_torch_or_training_code():
    bad = []
    for layer in NO_TORCH:
        for path in (KAVIZ / layer).rglob("*.py"):
            for line, mod in _imports(path):
                if mod.split(".")[0] in ("torch", "transformers", "captum", "accelerate") or _layer(mod) in (
                    "train",
                    "stages",
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_library_never_imports_streamlit():
    bad = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in _modules()
        for line, mod in _imports(p)
        if mod.split(".")[0] == "streamlit"
    ]
    assert not bad, bad


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(kaviz.__path__, "kaviz.")]


@pytest.mark.parametrize("name", _all_modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def test_importing_every_module_loads_no_streamlit():
    code = (
        "import importlib, pkgutil, sys, kaviz\n"
        "for m in pkgutil.walk_packages(kaviz.__path__, 'kaviz.'): importlib.import_module(m.name)\n"
        "assert 'streamlit' not in sys.modules, 'streamlit was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_special_values_of_the_tables_are_decoded_in_the_schema_only():
    """Pages, views and analysis call kaviz.core.schema's selectors; nobody else compares against
    -1, "self" or a metric-family prefix."""
    import re

    pattern = re.compile(r"== -1|\"self\"|startswith\(\"(probe|general|attribution)_")
    files = [*ROOT.joinpath("pages").glob("*.py"), *KAVIZ.joinpath("views").glob("*.py")]
    files += [*KAVIZ.joinpath("analysis").glob("*.py")]
    bad = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not bad, bad


def test_the_method_registry_and_the_table_of_methods_agree():
    from kaviz.core import registry
    from kaviz.stages.methods import METHODS

    assert tuple(METHODS) == registry.METHODS

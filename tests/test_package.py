"""Promises of the package as a whole: UI-free library, no unpickling."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_kaviz_does_not_load_streamlit():
    code = "import sys, kaviz, kaviz.stages.pipeline, kaviz.views.plots, kaviz.store, kaviz.cli; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_module_unpickles():
    unsafe = re.compile(r"pickle\.loads?\(|torch\.load\((?![^)]*weights_only=True)|trust_remote_code=True")
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in [*ROOT.joinpath("kaviz").rglob("*.py"), *ROOT.joinpath("pages").rglob("*.py"), ROOT / "app.py"]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if unsafe.search(line)
    ]
    assert not offenders, offenders


def test_app_binds_to_localhost_by_default():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "localhost"
    assert cfg["browser"]["gatherUsageStats"] is False

"""kaviz.store.manifest: unit ids, unit plans, config diffs on resume, manifest validation (through the run store)."""

from __future__ import annotations

import json

import pytest

from kaviz.store.manifest import SCHEMA_VERSION, StoreError, unit_id
from tests.helpers import store_config, store_units

_config, _units = store_config, store_units


# ----- unit ids -----------------------------------------------------------------------------------


def test_unit_id_formats():
    assert unit_id("pretrained") == "pretrained"
    assert unit_id("finetuned") == "finetuned"
    assert unit_id("pruned", "knowledge-aware", 0.9, 42) == "pruned_knowledge-aware_s0.9_seed42"
    assert unit_id("pruned", "small-dense", 0.95, 7) == "pruned_small-dense_s0.95_seed7"
    with pytest.raises(StoreError, match="stage"):
        unit_id("teacher")
    with pytest.raises(StoreError, match="needs sparsity, seed"):
        unit_id("pruned", "knowledge-aware")
    with pytest.raises(StoreError, match="takes no method"):
        unit_id("finetuned", "knowledge-aware")
    with pytest.raises(StoreError, match="not allowed"):
        unit_id("pruned", "../x", 0.5, 1)


# ----- unit plans and resume ----------------------------------------------------------------------


def test_bad_unit_plans_rejected(store):
    with pytest.raises(StoreError, match="planned twice"):
        store.create_run(_config(), units=[{"unit": "pretrained", "stage": "pretrained"}] * 2)
    with pytest.raises(StoreError, match="stage"):
        store.create_run(_config(), units=[{"unit": "x", "stage": "teacher"}])
    assert not store.has_run("r1")


def test_resume_with_other_config_names_keys(store, run):
    cfg = _config()
    cfg["training"]["epochs"] = 1.0
    cfg["seed"] = 7
    with pytest.raises(StoreError, match=r"differing keys: seed \(stored 42, given 7\); training\.epochs"):
        store.create_run(cfg, units=_units(), resume=True)
    assert run.manifest["config"] == _config()


# ----- reading and validation ---------------------------------------------------------------------


def test_future_schema_version_rejected(store, run):
    m = run.manifest
    m["schema_version"] = SCHEMA_VERSION + 1
    (run.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="written by a newer kaviz"):
        store.open_run("r1")
    assert store.list_runs().loc[0, "status"] == "unreadable"


def test_garbage_manifest_gives_store_error(store, run):
    (run.path / "manifest.json").write_text('{"schema_version": 1, "units": {')
    with pytest.raises(StoreError, match=r"manifest\.json: corrupt manifest"):
        store.open_run("r1")
    (run.path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(StoreError, match="corrupt manifest"):
        run.units()

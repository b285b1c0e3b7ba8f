"""Run store: round trips, resume, hostile names and paths, corrupt files, concurrency, copies."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from kaviz.store import (
    METRIC_COLUMNS,
    SCHEMA_VERSION,
    RunExistsError,
    RunStore,
    StoreError,
    atomic,
    owner,
    unit_id,
)
from tests.helpers import store_config, store_units

HOSTILE = ["../../x", "/abs", "a/b", "..", ".", "", "a\x00b", ".hidden", "x" * 200]


_config, _units = store_config, store_units


def _done(run, unit, acc=0.5, **kw):
    run.start_unit(unit)
    run.finish_unit(unit, [{"metric": "accuracy", "value": acc}], **kw)


# ----- round trip ---------------------------------------------------------------------------------


def test_create_is_lazy_and_manifest_has_provenance(store, tmp_path):
    assert not store.root.exists()
    assert store.list_runs().empty
    run = store.create_run(_config(), units=_units())
    m = run.manifest
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["run_id"] == "r1" and m["status"] == "running" and m["seed"] == 42
    assert {"python", "kaviz", "torch", "transformers", "datasets"} <= set(m["versions"])
    assert m["git"] is None or len(m["git"]) == 40
    assert m["unit_order"] == [u["unit"] for u in _units()]
    assert all(u["status"] == "pending" and u["attempts"] == 0 for u in m["units"].values())
    assert run.config == _config()
    assert store.has_run("r1") and not store.has_run("r2")
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_git_is_none_outside_a_repository(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert store.create_run(_config(), units=[]).manifest["git"] is None


def test_units_metrics_and_tables_round_trip(run):
    _done(run, "pretrained", 0.1)
    _done(run, "finetuned", 0.9, info={"steps": 10})
    pruned = unit_id("pruned", "knowledge-aware", 0.9, 42)
    run.start_unit(pruned)
    sp = pd.DataFrame({"matrix": ["q", "k"], "zeros": [9, 8], "total": [10, 10]})
    rows = pd.DataFrame({"metric": ["accuracy", "loss"], "value": [0.8, 1], "split": ["dev", "dev"]})
    run.finish_unit(pruned, rows, info={"sparsity_actual": 0.9}, tables={"sparsity": sp})
    other = unit_id("pruned", "knowledge-aware", 0.5, 42)
    run.start_unit(other)
    run.fail_unit(other, "CUDA out of memory")

    units = run.units().set_index("unit")
    assert list(units["status"]) == ["done", "done", "failed", "done"]
    assert units.loc["finetuned", "info"] == {"steps": 10}
    assert units.loc[other, "error"] == "CUDA out of memory"
    assert units.loc[pruned, "attempts"] == 1 and units.loc[pruned, "seconds"] >= 0
    assert str(units["seed"].dtype) == "Int64" and units["sparsity"].dtype == "float64"
    assert run.unit_status(pruned) == "done"

    m = run.metrics()
    assert list(m.columns) == [*METRIC_COLUMNS, "split"]
    assert m["sparsity"].dtype == "float64" and str(m["seed"].dtype) == "Int64" and m["value"].dtype == "float64"
    assert len(m) == 4 and set(m["run"]) == {"r1"}
    row = m[m["unit"] == pruned].set_index("metric")
    assert row.loc["loss", "value"] == 1.0 and row.loc["loss", "sparsity"] == 0.9 and row.loc["loss", "seed"] == 42
    assert row.loc["loss", "method"] == "knowledge-aware" and row.loc["loss", "stage"] == "pruned"
    base = m[m["unit"] == "pretrained"].iloc[0]
    assert pd.isna(base["method"]) and pd.isna(base["sparsity"]) and pd.isna(base["seed"])

    table = run.unit_table("sparsity")
    assert list(table.columns) == ["unit", "matrix", "zeros", "total"]
    assert set(table["unit"]) == {pruned} and table["zeros"].tolist() == [9, 8]
    assert list(run.unit_table("nothing").columns) == ["unit"]

    assert run.tables() == [] and run.read_table("cka") is None
    cka = pd.DataFrame({"layer": [0, 1], "cka": [0.9, 0.5]})
    run.write_table("cka", cka)
    pd.testing.assert_frame_equal(run.read_table("cka"), cka)
    assert run.tables() == ["cka"]

    run.set_status("complete")
    assert run.status == "complete"
    with pytest.raises(StoreError, match="not one of"):
        run.set_status("finished")


def test_empty_metrics_have_typed_columns(run):
    m = run.metrics()
    assert list(m.columns) == METRIC_COLUMNS and m.empty
    assert str(m["seed"].dtype) == "Int64" and m["sparsity"].dtype == "float64"


def test_finish_unit_rejects_bad_input(run):
    with pytest.raises(StoreError, match="lack column"):
        run.finish_unit("pretrained", [{"metric": "accuracy"}])
    with pytest.raises(StoreError, match="numeric"):
        run.finish_unit("pretrained", [{"metric": "accuracy", "value": "high"}])
    with pytest.raises(StoreError, match="reserved"):
        run.finish_unit("pretrained", [], tables={"metrics": pd.DataFrame()})
    with pytest.raises(StoreError, match="did you mean 'finetuned'"):
        run.finish_unit("finetune", [])
    with pytest.raises(StoreError, match="JSON"):
        run.finish_unit("pretrained", [], info={"model": object()})
    assert run.unit_status("pretrained") == "pending"


def test_metrics_only_from_done_units_and_restart_clears_stale_files(run):
    # a process killed after writing metrics but before marking the unit done
    run.start_unit("finetuned")
    atomic.write_parquet(run.path / "units" / "finetuned" / "metrics.parquet", pd.DataFrame({"x": [1]}))
    atomic.write_parquet(run.path / "units" / "finetuned" / "stale.parquet", pd.DataFrame({"x": [1]}))
    assert run.metrics().empty and run.unit_table("stale").empty
    run.start_unit("finetuned")
    assert not list((run.path / "units" / "finetuned").glob("*.parquet"))
    run.finish_unit("finetuned", [{"metric": "accuracy", "value": 0.7}])
    assert run.metrics()["value"].tolist() == [0.7] and run.units().set_index("unit").loc["finetuned", "attempts"] == 2


def test_log_appends_timestamped_lines(run):
    run.log("training teacher")
    run.log("two\nlines")
    lines = run.log_path.read_text().splitlines()
    assert "created run r1" in lines[0]
    assert lines[1].endswith(" training teacher") and lines[1][:4].isdigit()
    assert lines[2].endswith(" two") and lines[3] == "    lines"


# ----- checkpoints and tokenizer ------------------------------------------------------------------


def test_checkpoint_round_trip_is_safetensors(run):
    import torch
    import transformers

    from tests.helpers import tiny_bert

    model = tiny_bert(layers=1, hidden=16, heads=2, inter=32, vocab=50, kaviz_attention=False).eval()
    assert run.checkpoint_dir("finetuned") is None
    path = run.save_checkpoint("finetuned", model)
    assert path == run.checkpoint_dir("finetuned") == run.path / "units" / "finetuned" / "checkpoint"
    names = {p.name for p in path.iterdir()}
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = transformers.BertForSequenceClassification.from_pretrained(path).eval()
    x = torch.tensor([[2, 5, 6, 3]])
    torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)

    with torch.no_grad():
        model.classifier.bias.fill_(3.0)
    run.save_checkpoint("finetuned", model)  # replaces the old one
    again = transformers.BertForSequenceClassification.from_pretrained(path)
    assert torch.all(again.classifier.bias == 3.0)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint"]  # no temp folders left

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])}
    assert run.tokenizer_dir() is None
    run.save_tokenizer(transformers.BertTokenizer(vocab=vocab))
    tok = transformers.AutoTokenizer.from_pretrained(run.tokenizer_dir())
    assert tok("a b")["input_ids"] == [2, 5, 6, 3]


def test_failed_save_keeps_old_checkpoint(run):
    class Model:
        def __init__(self, fail):
            self.fail = fail

        def save_pretrained(self, folder):
            (folder / "model.safetensors").write_bytes(b"new" if not self.fail else b"partial")
            if self.fail:
                raise RuntimeError("disk full")

    run.save_checkpoint("finetuned", Model(fail=False))
    with pytest.raises(RuntimeError, match="disk full"):
        run.save_checkpoint("finetuned", Model(fail=True))
    ckpt = run.checkpoint_dir("finetuned")
    assert (ckpt / "model.safetensors").read_bytes() == b"new"
    assert [p.name for p in ckpt.parent.iterdir()] == ["checkpoint"]


def test_an_empty_checkpoint_folder_is_no_checkpoint(run):
    """What an older kaviz's unit-parallel rank 1 left (save_pretrained wrote nothing there): the unit
    has no weights, so the analysis skips it instead of failing on a folder without config.json."""
    (run.path / "units" / "finetuned" / "checkpoint").mkdir(parents=True)
    assert run.checkpoint_dir("finetuned") is None and not run.has_weights("finetuned")


# ----- resume -------------------------------------------------------------------------------------


def test_existing_run_needs_resume(store, run):
    with pytest.raises(RunExistsError, match="pass --resume to continue it or choose another name"):
        store.create_run(_config(), units=_units())


def test_resume_keeps_done_resets_running_adds_new(store, run):
    _done(run, "pretrained")
    run.start_unit("finetuned")  # killed in flight
    failed = unit_id("pruned", "knowledge-aware", 0.5, 42)
    run.start_unit(failed)
    run.fail_unit(failed, "boom")
    run.set_status("interrupted")

    reordered = dict(reversed(list(_config().items())))  # key order does not matter
    units = _units(methods=("knowledge-aware", "oneshot-magnitude"))
    again = store.create_run(reordered, units=units, resume=True)
    st = again.units().set_index("unit")["status"]
    assert st["pretrained"] == "done" and st["finetuned"] == "pending" and st[failed] == "failed"
    new = unit_id("pruned", "oneshot-magnitude", 0.9, 42)
    assert st[new] == "pending"
    assert again.manifest["unit_order"] == [u["unit"] for u in units]
    assert again.status == "running"
    assert again.units().set_index("unit").loc["finetuned", "attempts"] == 1
    assert "reset to pending (finetuned)" in again.log_path.read_text()
    assert len(again.metrics()) == 1


def test_extend_adds_units_of_a_larger_grid_and_keeps_the_rest(store, run):
    """Extending: the grid keys may change (the run takes the new config and its new units, done units
    stay done); any other key must not, and a grid that leaves out a stored unit is refused."""
    _done(run, "pretrained")
    _done(run, "finetuned")
    grid = ("sparsities", "extra_seeds")
    bigger = _config(extra_seeds=[43])
    units = _units(seeds=(42, 43))
    with pytest.raises(StoreError, match=r"differing keys: extra_seeds"):  # plain resume: refused
        store.create_run(bigger, units=units, resume=True)
    again = store.create_run(bigger, units=units, resume=True, extend=grid)
    st = again.units().set_index("unit")["status"]
    assert st["pretrained"] == st["finetuned"] == "done" and (again.units().attempts[:2] == 1).all()
    assert st[unit_id("pruned", "knowledge-aware", 0.9, 43)] == "pending" and len(st) == len(units)
    assert again.manifest["config"] == bigger
    assert "grid extended: extra_seeds (stored [], given [43])" in again.log_path.read_text()
    other = _config(extra_seeds=[43], seed=7)
    with pytest.raises(StoreError, match=r"only extra_seeds, sparsities may change .*: seed \(stored 42, given 7\)"):
        store.create_run(other, units=units, resume=True, extend=grid)
    smaller = {**bigger, "sparsities": [0.5]}
    with pytest.raises(StoreError, match=r"only adds units, but the new grid leaves out 2 stored unit\(s\)"):
        store.create_run(smaller, units=_units(sparsities=(0.5,), seeds=(42, 43)), resume=True, extend=grid)
    assert store.open_run("r1").manifest["config"] == bigger  # a refused extension changes nothing


@pytest.fixture
def other_process():
    """A live process of this machine that is not this one: its owner tag."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield owner.owner_tag(child.pid), child
    finally:
        child.kill()
        child.wait()


def test_owner_tags_name_a_live_process_by_pid_and_start(other_process):
    """A tag is machine:pid:start; it is alive only on this machine, for the same pid and start (a
    reused pid is not it), and this process counts only when asked; a killed and reaped process,
    or only its zombie, is gone."""
    tag, child = other_process
    machine, pid, start = owner.parse(tag)
    assert machine == owner.MACHINE and pid == str(child.pid) and start
    assert owner.owner_alive(tag) and owner.checkable(tag)
    assert not owner.owner_alive(f"{machine}:{pid}:t1")  # a reused pid: another start
    assert not owner.owner_alive(f"elsewhere:{pid}:{start}") and not owner.checkable(f"elsewhere:{pid}:{start}")
    assert not any(owner.owner_alive(t) for t in (None, "", "x", "a:b:c"))
    me = owner.owner_tag()
    assert not owner.owner_alive(me) and owner.owner_alive(me, count_self=True)
    assert not owner.owner_alive(f"{owner.MACHINE}:{os.getpid()}:t1", count_self=True)  # not this process
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    ztag = owner.owner_tag(zombie.pid)
    while owner.start_time(zombie.pid):  # exited, not reaped yet: a zombie counts as gone
        time.sleep(0.02)
    assert not owner.owner_alive(ztag)
    zombie.wait()


def test_resume_is_refused_while_another_live_process_runs_the_run(store, run, other_process):
    """The process that creates or resumes a run owns it until it sets another status; while that
    process lives, a resume elsewhere is refused with its pid (before any unit is marked running:
    loading the data can take minutes); a killed owner does not block, nor does this process."""
    tag, child = other_process
    assert run.manifest["owner"] == owner.owner_tag()
    store.create_run(_config(), units=_units(), resume=True)  # this process: allowed
    run._update(lambda m: m.__setitem__("owner", tag))
    with pytest.raises(StoreError, match=rf"being run right now by process {child.pid} on this machine"):
        store.create_run(_config(), units=_units(), resume=True)
    assert store.list_runs().set_index("run_id").loc["r1", "status"] == "running"
    child.kill()
    child.wait()
    assert store.list_runs().set_index("run_id").loc["r1", "status"] == "interrupted"  # its owner is gone
    again = store.create_run(_config(), units=_units(), resume=True)
    assert again.status == "running" and again.manifest["owner"] != tag
    again.set_status("complete")
    assert "owner" not in again.manifest  # a finished run is nobody's


def test_a_unit_a_live_process_trains_is_neither_reset_nor_started_again(store, run, other_process):
    tag, child = other_process
    run.start_unit("finetuned")
    run._update(lambda m: m["units"]["finetuned"].__setitem__("owner", tag))
    run._update(lambda m: m.pop("owner"))  # (the unit's owner alone: a run made before run owners)
    with pytest.raises(StoreError, match=rf"being trained right now: finetuned by process {child.pid}"):
        store.create_run(_config(), units=_units(), resume=True)
    with pytest.raises(StoreError, match=rf"'finetuned' of run 'r1' is being trained by process {child.pid}"):
        run.start_unit("finetuned")
    assert run.unit_status("finetuned") == "running" and run.units().set_index("unit").attempts["finetuned"] == 1


def test_a_copy_of_a_run_in_progress_is_nobodys(store, run, tmp_path, other_process):
    tag, _ = other_process
    run.start_unit("finetuned")
    run._update(lambda m: (m.__setitem__("owner", tag), m["units"]["finetuned"].__setitem__("owner", tag)))
    copy = run.copy_to(tmp_path / "copies")
    assert copy.status == "interrupted" and copy.unit_status("finetuned") == "pending"
    assert "owner" not in copy.manifest and not any("owner" in u for u in copy.manifest["units"].values())
    RunStore(tmp_path / "copies").create_run(_config(), units=_units(), resume=True)  # not blocked


def test_extend_refuses_a_run_that_does_not_exist(store):
    with pytest.raises(StoreError, match="there is no run 'nope' .* to extend"):
        store.create_run(_config("nope"), units=_units(), resume=True, extend=("sparsities",))
    assert not store.has_run("nope")


def test_resume_of_missing_run_creates_it(store):
    run = store.create_run(_config("fresh"), units=_units(), resume=True)
    assert run.status == "running" and len(run.units()) == len(_units())


# ----- hostile names and paths --------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_rejected(store, run, name, tmp_path):
    with pytest.raises(StoreError):
        store.create_run({**_config(), "name": name}, units=[])
    for call in (store.open_run, store.has_run, store.delete_run):
        with pytest.raises(StoreError):
            call(name)
    with pytest.raises(StoreError):
        store.create_run(_config("r2"), units=[{"unit": name, "stage": "pretrained"}])
    for call in (run.start_unit, run.checkpoint_dir, run.read_table, run.unit_table):
        with pytest.raises(StoreError):
            call(name)
    with pytest.raises(StoreError):
        run.write_table(name, pd.DataFrame({"a": [1]}))
    with pytest.raises(StoreError):
        run.finish_unit("pretrained", [], tables={name: pd.DataFrame({"a": [1]})})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert sorted(p.name for p in store.root.iterdir()) == ["r1"]


def test_symlinked_run_leaving_root_is_refused(store, run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text((run.path / "manifest.json").read_text())
    (store.root / "evil").symlink_to(outside)
    for call in (store.open_run, store.has_run, store.delete_run):
        with pytest.raises(StoreError, match="outside the runs folder"):
            call("evil")
    with pytest.raises(StoreError, match="outside the runs folder"):
        store.create_run(_config("evil"), units=[], resume=True)
    assert (outside / "manifest.json").exists()
    listed = store.list_runs().set_index("run_id")
    assert listed.loc["evil", "status"] == "unreadable" and listed.loc["r1", "status"] == "running"


def test_symlinked_unit_folder_leaving_root_is_refused(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (run.path / "units").mkdir()
    (run.path / "units" / "finetuned").symlink_to(outside)
    with pytest.raises(StoreError, match="outside the runs folder"):
        run.finish_unit("finetuned", [{"metric": "accuracy", "value": 1.0}])
    assert not list(outside.iterdir())


# ----- corrupt files ------------------------------------------------------------------------------


def test_truncated_parquet_gives_store_error(run):
    _done(run, "finetuned", tables={"sparsity": pd.DataFrame({"a": range(100)})})
    run.write_table("cka", pd.DataFrame({"a": range(100)}))
    for path in (
        run.path / "units" / "finetuned" / "metrics.parquet",
        run.path / "units" / "finetuned" / "sparsity.parquet",
        run.path / "analysis" / "cka.parquet",
    ):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"metrics\.parquet: not a readable parquet file"):
        run.metrics()
    with pytest.raises(StoreError, match=r"sparsity\.parquet"):
        run.unit_table("sparsity")
    with pytest.raises(StoreError, match=r"cka\.parquet"):
        run.read_table("cka")


def test_list_runs_survives_broken_folders(store):
    a = store.create_run(_config("a"), units=_units())
    _done(a, "pretrained")
    store.create_run(_config("b"), units=_units())
    (store.root / "empty").mkdir()
    (store.root / "garbage").mkdir()
    (store.root / "garbage" / "manifest.json").write_text("not json")
    (store.root / "notes.txt").write_text("a stray file")
    (store.root / ".tmp-half-created").mkdir()
    df = store.list_runs()
    assert df["run_id"].tolist() == ["b", "a", "empty", "garbage"]
    first = df.iloc[1]
    assert first["task"] == "demo" and first["methods"] == "knowledge-aware, oneshot-magnitude"
    assert first["n_units"] == 4 and first["n_done"] == 1 and pd.isna(first["error"])
    bad = df.set_index("run_id").loc[["empty", "garbage"]]
    assert (bad["status"] == "unreadable").all() and bad["error"].str.contains("manifest").all()


def test_open_missing_run_suggests_a_name(store, run):
    store.create_run(_config("sst2-base"), units=[])
    with pytest.raises(StoreError, match="did you mean 'sst2-base'"):
        store.open_run("sst2-bas")
    with pytest.raises(StoreError, match="runs there: r1, sst2-base"):
        store.open_run("zzz")


def test_delete_run(store, run):
    store.delete_run("r1")
    assert not store.has_run("r1") and list(store.root.iterdir()) == []
    with pytest.raises(StoreError, match="no run"):
        store.delete_run("r1")


# ----- concurrency --------------------------------------------------------------------------------


def _finish_many(root: str, units: list[str]) -> None:
    run = RunStore(root).open_run("r1")
    for u in units:
        run.start_unit(u)
        run.finish_unit(u, [{"metric": "accuracy", "value": 1.0}], info={"pid": os.getpid()})


def test_concurrent_finish_unit_loses_nothing(store):
    seeds = range(1, 16)
    units = _units(sparsities=(0.5,), seeds=seeds)
    store.create_run(_config(), units=units)
    pruned = [u["unit"] for u in units[2:]]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_finish_many, args=(str(store.root), pruned[i::2])) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    run = store.open_run("r1")
    st = run.units().set_index("unit")
    assert (st.loc[pruned, "status"] == "done").all()
    assert len({u["info"]["pid"] for u in run.manifest["units"].values() if u["info"]}) == 2
    assert sorted(run.metrics()["unit"]) == sorted(pruned)


# ----- copies -------------------------------------------------------------------------------------


def test_copy_without_checkpoints_keeps_every_table(run, tmp_path):
    class Model:
        def save_pretrained(self, folder):
            (folder / "model.safetensors").write_bytes(b"w" * 1000)

    _done(run, "pretrained")
    run.save_checkpoint("finetuned", Model())
    _done(run, "finetuned", tables={"sparsity": pd.DataFrame({"zeros": [1, 2]})})
    run.write_table("cka", pd.DataFrame({"cka": [0.5]}))
    (run.path / "tokenizer").mkdir()
    (run.path / "tokenizer" / "vocab.txt").write_text("a\nb\n")

    light = run.copy_to(tmp_path / "demo")
    assert light.run_id == "r1" and light.path == tmp_path / "demo" / "r1"
    assert light.checkpoint_dir("finetuned") is None
    pd.testing.assert_frame_equal(light.metrics(), run.metrics())
    pd.testing.assert_frame_equal(light.unit_table("sparsity"), run.unit_table("sparsity"))
    pd.testing.assert_frame_equal(light.read_table("cka"), run.read_table("cka"))
    pd.testing.assert_frame_equal(light.units(), run.units())
    assert light.tables() == ["cka"] and light.tokenizer_dir() is not None
    assert light.log_path.read_text() == run.log_path.read_text()
    assert light.manifest["copied_from"]["include_checkpoints"] is False
    assert not (light.path / ".lock").exists()
    with pytest.raises(RunExistsError):
        run.copy_to(tmp_path / "demo")

    full = run.copy_to(tmp_path / "full", include_checkpoints=True)
    assert (full.checkpoint_dir("finetuned") / "model.safetensors").read_bytes() == b"w" * 1000


def test_copy_without_texts_drops_every_sentence_and_keeps_the_rest(run, tmp_path):
    att = pd.DataFrame({"example": [0, 1], "text": ["a secret sentence", "another one"], "spearman": [0.5, 0.7]})
    _done(run, "pretrained")
    _done(run, "finetuned", tables={"attribution": att})
    run.write_table("attribution", att.assign(unit="finetuned"))

    copy = run.copy_to(tmp_path / "shared", texts=False)
    pd.testing.assert_frame_equal(copy.unit_table("attribution"), run.unit_table("attribution").drop(columns="text"))
    pd.testing.assert_frame_equal(copy.read_table("attribution"), run.read_table("attribution").drop(columns="text"))
    assert copy.manifest["copied_from"]["texts"] is False
    assert not any(b"secret" in p.read_bytes() for p in copy.path.rglob("*") if p.is_file())
    assert "text" in run.unit_table("attribution").columns  # the source is untouched


# ----- import weight ------------------------------------------------------------------------------


def test_import_is_light():
    code = "import sys, kaviz.store; assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unit_tables_added_after_finish(run):
    df = pd.DataFrame({"layer": [0, 1], "metric": ["linear_cka", "linear_cka"], "value": [1.0, 0.5]})
    with pytest.raises(StoreError, match="not done"):
        run.write_unit_table("pretrained", "knowledge", df)
    run.start_unit("pretrained")
    run.finish_unit("pretrained", [{"metric": "score", "value": 0.5}])
    assert not run.has_unit_table("pretrained", "knowledge")
    run.write_unit_table("pretrained", "knowledge", df)
    assert run.has_unit_table("pretrained", "knowledge")
    got = run.unit_table("knowledge")
    assert list(got.unit) == ["pretrained", "pretrained"] and list(got.value) == [1.0, 0.5]
    with pytest.raises(StoreError, match="finish_unit"):
        run.write_unit_table("pretrained", "metrics", df)
    with pytest.raises(StoreError):
        run.write_unit_table("pretrained", "../x", df)


def test_scratch_folders_live_inside_the_run_and_are_removed(run, tmp_path):
    with run.scratch("capture-finetuned") as a, run.scratch("capture-finetuned") as b:
        assert a != b and a.is_dir() and b.is_dir() and not any(a.iterdir())
        assert run.path in a.parents and a.name.startswith("capture-finetuned.")
        (a / "chunk.bin").write_bytes(b"x" * 10)
        copy = run.copy_to(tmp_path / "copy")
        assert not any(p.name.startswith(".scratch") for p in copy.path.iterdir())
    assert not a.exists() and not b.exists() and not a.parent.exists()
    with pytest.raises(RuntimeError, match="boom"), run.scratch("x") as c:
        (c / "f").write_text("half-written")
        raise RuntimeError("boom")
    assert not c.exists()
    with pytest.raises(StoreError), run.scratch("../outside"):
        pass


def test_scratch_left_by_a_killed_process_is_cleared_on_the_next_call(run):
    """A process killed inside ``run.scratch`` leaves its folder; the next call removes it when its
    owner (this host, a pid that no longer runs) is gone, and leaves a live or foreign owner's alone."""
    from pathlib import Path

    from kaviz.store.run import _HOST

    code = (
        "import os, sys; from kaviz.store import RunStore; "
        f"run = RunStore({str(run.store.root)!r}).open_run({run.run_id!r}); "
        "cm = run.scratch('capture-pruned_ka_s0.9_seed42'); d = cm.__enter__(); "
        "(d / 'chunk.bin').write_bytes(b'x' * 10); print(d, flush=True); os._exit(9)"  # killed: no cleanup
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 9, out.stderr
    left = Path(out.stdout.strip())
    assert left.is_dir() and left.name.startswith("capture-pruned_ka_s0.9_seed42.")
    live = left.parent / f"capture-x.{_HOST}-{os.getppid()}.abc"  # a running process (our parent)
    foreign = left.parent / "capture-x.otherhost-1.abc"
    live.mkdir()
    foreign.mkdir()
    with run.scratch("capture-y") as mine:
        assert mine.is_dir() and not left.exists()
        assert live.is_dir() and foreign.is_dir()

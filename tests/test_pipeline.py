import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kaviz.core.config import RunConfig
from kaviz.core.registry import DEFAULT_METHODS as METHODS
from kaviz.stages.pipeline import Pipeline, plan_units, summary_table
from kaviz.store import RunStore

SPARSITIES = [0.5, 0.9]


def tiny_config(name="t", **over):
    data = {
        "name": name,
        "model": {"name_or_path": "tiny"},
        "task": {"name": "demo", "demo_train_size": 160, "demo_dev_size": 64, "max_length": 32},
        "training": {"max_steps": 8, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1},
        "pruning": {"max_steps": 6, "learning_rate": 1e-3, "mask_updates": 3},
        "sparsities": SPARSITIES,
        "analysis": {"probe_size": 32, "attribution_examples": 2, "ig_steps": 4},
        **over,
    }
    return RunConfig.from_dict(data)


def test_plan_units_extra_seeds():
    cfg = tiny_config(extra_seeds=[1], extra_seed_sparsities=[0.9], methods=["knowledge-aware"])
    units = [u["unit"] for u in plan_units(cfg)]
    assert units == [
        "pretrained",
        "finetuned",
        "pruned_knowledge-aware_s0.5_seed42",
        "pruned_knowledge-aware_s0.9_seed42",
        "pruned_knowledge-aware_s0.9_seed1",
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    return Pipeline(tiny_config(), store, progress=False).run()


def test_full_tiny_pipeline_end_to_end(tiny_run):
    assert tiny_run.status == "complete"
    m = tiny_run.metrics()
    assert set(m.stage) == {"pretrained", "finetuned", "pruned"}
    assert set(m[m.stage == "pruned"].method) == set(METHODS)
    sp = m[(m.metric == "encoder_sparsity") & (m.stage == "pruned")]
    assert len(sp) == len(METHODS) * len(SPARSITIES)
    for _, row in sp.iterrows():
        assert abs(row.value - row.sparsity) <= 0.005, row.unit
    assert set(m.metric) >= {"accuracy", "score", "nonzero_encoder_params", "nonzero_params"}
    table = summary_table(tiny_run)
    assert len(table) == 2 + len(METHODS) * len(SPARSITIES)


def test_units_store_checkpoints_and_tables(tiny_run):
    units = tiny_run.units()
    assert (units.status == "done").all()
    assert tiny_run.checkpoint_dir("finetuned") is not None
    ka = "pruned_knowledge-aware_s0.9_seed42"
    ckpt = tiny_run.checkpoint_dir(ka)
    assert any(p.suffix == ".safetensors" for p in ckpt.iterdir())
    per_matrix = tiny_run.unit_table("sparsity")
    ka_rows = per_matrix[per_matrix.unit == ka]
    assert len(ka_rows) == 4 * 6 and (ka_rows.sparsity - 0.9).abs().max() < 1e-3
    hist = tiny_run.unit_table("history")
    assert {"loss", "att", "hid", "pred"} <= set(hist[hist.unit == ka].columns)


def test_pruned_checkpoint_reloads_with_same_zeros(tiny_run):
    from kaviz.train.models import load_classifier
    from kaviz.train.pruning import sparsity_summary

    ckpt = tiny_run.checkpoint_dir("pruned_gradual-magnitude_s0.9_seed42")
    model = load_classifier(str(ckpt), num_labels=2)
    assert sparsity_summary(model)["encoder_sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_resume_finished_run_does_nothing(tiny_run):
    cfg = RunConfig.from_dict(tiny_run.config)
    run = Pipeline(cfg, tiny_run.store, resume=True, progress=False).run()
    assert (run.units().attempts == 1).all()


def run_made_before_precision(store: RunStore, cfg: RunConfig) -> None:
    """Run ``cfg`` and drop training.precision from its stored config, as a kaviz before that field wrote it."""
    Pipeline(cfg, store, progress=False).run()
    path = store.open_run(cfg.name).path / "manifest.json"
    m = json.loads(path.read_text())
    del m["config"]["training"]["precision"]
    path.write_text(json.dumps(m))


def test_resume_a_run_made_before_new_config_fields(tmp_path):
    """A run whose stored config lacks fields added since (here: training.precision) resumes when
    those fields hold their defaults; a real difference is still refused."""
    from kaviz.store import StoreError

    store, cfg = RunStore(tmp_path), tiny_config(methods=["oneshot-magnitude"], sparsities=[0.5])
    run_made_before_precision(store, cfg)
    run = Pipeline(cfg, store, resume=True, progress=False).run()
    assert run.status == "complete" and (run.units().attempts == 1).all()
    changed = RunConfig.from_dict({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "precision": "bf16"}})
    with pytest.raises(StoreError, match="different config"):
        Pipeline(changed, store, resume=True, progress=False).run()


def test_extend_trains_only_the_new_units(tmp_path, capsys):
    """`kaviz run CFG --extend` on a stored run with one more sparsity and a budget block: the teacher
    and the finished student are kept as they are (one attempt, same score), only the new units
    train; a changed training field is refused with its key named."""
    import yaml

    from kaviz import cli

    cfg = tiny_config(name="grow", methods=["gradual-magnitude"], sparsities=[0.5])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = str(tmp_path / "runs")
    assert cli.main(["run", str(path), "--out", out, "--quiet", "--no-analyze"]) == 0
    before = RunStore(out).open_run("grow").metrics()
    bigger = {**cfg.to_dict(), "sparsities": [0.5, 0.9], "extra_units": [{"sparsities": [0.5], "budgets": [0.5]}]}
    path.write_text(yaml.safe_dump(bigger))
    assert cli.main(["run", str(path), "--out", out, "--quiet", "--no-analyze", "--extend"]) == 0
    run = RunStore(out).open_run("grow")
    units = run.units().set_index("unit")
    assert run.status == "complete" and (units.status == "done").all() and (units.attempts == 1).all()
    assert set(units.index) == {
        "pretrained", "finetuned", "pruned_gradual-magnitude_s0.5_seed42",
        "pruned_gradual-magnitude_s0.9_seed42", "pruned_gradual-magnitude_s0.5_seed42_ep0.5",
    }  # fmt: skip
    kept = run.metrics().merge(before, on=["unit", "metric"], suffixes=("", "_before"))
    assert len(kept) == len(before) and (kept.value == kept.value_before).all()
    assert run.config["sparsities"] == [0.5, 0.9]
    assert run.log_path.read_text().count("start finetuned") == 1
    path.write_text(yaml.safe_dump({**bigger, "training": {**bigger["training"], "learning_rate": 0.1}}))
    capsys.readouterr()
    assert cli.main(["run", str(path), "--out", out, "--quiet", "--extend"]) != 0
    assert "training.learning_rate" in capsys.readouterr().err


def test_extend_a_run_made_before_new_config_fields(tmp_path):
    """An older run's stored config lacks a field added since (here training.precision): --extend
    still adds the new sparsity's units, and the stored config keeps its own fields."""
    store, cfg = RunStore(tmp_path), tiny_config(methods=["oneshot-magnitude"], sparsities=[0.5])
    run_made_before_precision(store, cfg)
    bigger = tiny_config(methods=["oneshot-magnitude"], sparsities=[0.5, 0.9])
    run = Pipeline(bigger, store, extend=True, progress=False).run()
    assert run.status == "complete" and "pruned_oneshot-magnitude_s0.9_seed42" in set(run.units().unit)
    assert run.config["sparsities"] == [0.5, 0.9] and "precision" not in run.config["training"]


def test_extend_refuses_an_import_that_points_elsewhere(tmp_path):
    from kaviz.core.errors import ConfigError
    from kaviz.stages.grid import grid_extension

    stored = tiny_config(import_students=["ext@0.5=./a"]).to_dict()
    assert grid_extension(stored, tiny_config(import_students=["ext@0.5=./a", "ext@0.9=./b"])) == [
        "pruned_ext_s0.9_seed42"
    ]
    with pytest.raises(ConfigError, match="point elsewhere now: ext@0.5"):
        grid_extension(stored, tiny_config(import_students=["ext@0.5=./b"]))


def test_an_interrupted_unit_is_not_left_running(tmp_path, monkeypatch):
    """Ctrl-C in a unit (a notebook lives on after it): the unit is marked failed ("interrupted") and
    the run interrupted, so a resume from another process is not refused as if it were in training."""
    import kaviz.stages.methods as methods

    def interrupt(ctx, s, seed):
        raise KeyboardInterrupt

    monkeypatch.setitem(methods.METHODS, "gradual-magnitude", interrupt)
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(tiny_config(methods=["gradual-magnitude"], sparsities=[0.5]), store, progress=False).run()
    run = store.open_run("t")
    unit = run.units().set_index("unit").loc["pruned_gradual-magnitude_s0.5_seed42"]
    assert run.status == "interrupted" and unit.status == "failed" and unit.error == "interrupted"
    assert "owner" not in run.manifest


def test_existing_run_without_resume_is_refused(tiny_run):
    from kaviz.store import RunExistsError

    with pytest.raises(RunExistsError, match="--resume"):
        Pipeline(RunConfig.from_dict(tiny_run.config), tiny_run.store, progress=False).run()


def test_failed_unit_is_recorded_and_retried(tmp_path, monkeypatch):
    import kaviz.stages.methods as methods

    store = RunStore(tmp_path)
    cfg = tiny_config(methods=["oneshot-magnitude", "gradual-magnitude"], sparsities=[0.5])

    def boom(ctx, s, seed):
        raise RuntimeError("injected failure")

    monkeypatch.setitem(methods.METHODS, "gradual-magnitude", boom)
    with pytest.raises(RuntimeError, match="injected"):
        Pipeline(cfg, store, progress=False).run()
    run = store.open_run("t")
    assert run.status == "failed"
    units = run.units().set_index("unit")
    assert units.loc["pruned_gradual-magnitude_s0.5_seed42", "status"] == "failed"
    assert "injected" in units.loc["pruned_gradual-magnitude_s0.5_seed42", "error"]
    monkeypatch.undo()
    run = Pipeline(cfg, store, resume=True, progress=False).run()
    assert run.status == "complete"
    assert (run.units().set_index("unit").attempts.drop("pruned_gradual-magnitude_s0.5_seed42") == 1).all()


def test_kill_and_resume_redoes_at_most_one_unit(tmp_path):
    cfg = tiny_config(name="killed", pruning={"max_steps": 30, "learning_rate": 1e-3, "mask_updates": 3})
    cfg_path = tmp_path / "c.yaml"
    cfg.save(cfg_path)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "kaviz.cli", "run", str(cfg_path), "--out", str(runs), "--quiet", "--no-analyze"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # (the analysis after the units is not what is tested here)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = runs / "killed" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill while a training unit is in flight, after some are done
        try:
            units = json.loads(manifest.read_text())["units"]
        except (FileNotFoundError, json.JSONDecodeError):
            units = {}
        done = [u for u in units.values() if u["status"] == "done"]
        running = [u for u in units.values() if u["status"] == "running" and u["method"] != "oneshot-magnitude"]
        if len(done) >= 3 and running:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = json.loads(manifest.read_text())["units"]
    done_before = {k for k, u in before.items() if u["status"] == "done"}
    assert 3 <= len(done_before) < len(before)
    if any(u["status"] == "running" for u in before.values()):  # (not when killed between two units)
        assert RunStore(runs).list_runs().status[0] == "interrupted"  # not "running" for ever
    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = RunStore(runs).open_run("killed")
    assert run.status == "complete"
    units = run.units().set_index("unit")
    assert (units.status == "done").all()
    redone = units[units.attempts > 1]
    assert len(redone) <= 1  # at most the unit in flight
    assert not set(redone.index) & done_before  # finished units were kept


def test_trained_units_record_where_they_ran(tiny_run):
    units = tiny_run.manifest["units"]
    teacher = units["finetuned"]["info"]
    assert teacher["device"].startswith("cpu (") and teacher["precision"] == "fp32"
    assert "device" not in units["pretrained"]["info"]  # nothing was trained there


def test_plan_units_budget_blocks():
    """extra_units adds (method, sparsity, seed, budget) units; the main budget keeps its old ids,
    a budget equal to it is not planned twice, and a method that does not train gets no budgets."""
    cfg = tiny_config(
        methods=["oneshot-magnitude", "knowledge-aware"],
        sparsities=[0.9],
        pruning={"epochs": 2.0, "learning_rate": 1e-3, "mask_updates": 3},
        extra_units=[
            {"sparsities": [0.9], "seeds": [43]},
            {"budgets": [0.25, 2.0]},
        ],
    )
    units = {u["unit"]: u for u in plan_units(cfg)}
    assert list(units)[2:] == [
        "pruned_oneshot-magnitude_s0.9_seed42",
        "pruned_knowledge-aware_s0.9_seed42",
        "pruned_oneshot-magnitude_s0.9_seed43",
        "pruned_knowledge-aware_s0.9_seed43",
        "pruned_knowledge-aware_s0.9_seed42_ep0.25",
    ]
    assert units["pruned_knowledge-aware_s0.9_seed42"]["budget"] == 2.0
    assert units["pruned_knowledge-aware_s0.9_seed42_ep0.25"]["budget"] == 0.25
    assert units["pruned_oneshot-magnitude_s0.9_seed42"]["budget"] is None


def test_budget_units_train_their_budget_and_export_it(tmp_path):
    cfg = tiny_config(
        methods=["gradual-magnitude"],
        sparsities=[0.5],
        pruning={"epochs": 0.2, "learning_rate": 1e-3, "mask_updates": 3},
        extra_units=[{"budgets": [0.1]}],
        analysis={"enabled": False},
    )
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    m = run.metrics()
    steps = m[m.metric == "train_steps"].set_index("unit").value
    assert steps["pruned_gradual-magnitude_s0.5_seed42"] == 2  # ceil(160 / 16 * 0.2)
    assert steps["pruned_gradual-magnitude_s0.5_seed42_ep0.1"] == 1
    budgets = m[m.metric == "budget_epochs"].set_index("unit")
    assert budgets.loc["pruned_gradual-magnitude_s0.5_seed42_ep0.1", "budget"] == 0.1
    assert budgets.loc["pruned_gradual-magnitude_s0.5_seed42_ep0.1", "value"] == pytest.approx(16 / 160)
    seen = m[m.metric == "examples_seen"].set_index("unit").value
    assert seen["pruned_gradual-magnitude_s0.5_seed42"] == 32
    assert run.units().set_index("unit").budget["pruned_gradual-magnitude_s0.5_seed42"] == 0.2


def test_teacher_stops_at_its_plateau_and_keeps_the_best_epoch(tmp_path, monkeypatch):
    """plateau_delta: dev score after every epoch; training stops once an epoch gains < delta points,
    the per-epoch curve is stored, and the kept teacher scores the best epoch's score."""
    from kaviz.stages import methods

    scores = iter([0.60, 0.70, 0.703, 0.9])  # epoch 3 gains 0.3 points < 0.5: stop there, keep epoch 3

    def fake_eval(model):
        s = next(scores)
        return {"accuracy": s, "score": s}

    cfg = tiny_config(
        methods=["oneshot-magnitude"],
        sparsities=[0.5],
        training={"epochs": 10, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1, "plateau_delta": 0.5},
        analysis={"enabled": False},
    )
    ctx_eval = []
    real = methods.PlateauStop.__init__

    def init(self, model, evaluate, spe, delta, log=None):
        ctx_eval.append(spe)
        real(self, model, fake_eval, spe, delta, log)

    monkeypatch.setattr(methods.PlateauStop, "__init__", init)
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    spe = ctx_eval[0]
    assert spe == 10  # 160 examples / batch 16
    epochs = run.unit_table("epochs")
    assert list(epochs.epoch) == [1, 2, 3]
    assert list(epochs.score) == pytest.approx([0.60, 0.70, 0.703])
    info = run.manifest["units"]["finetuned"]["info"]
    assert info["epochs_trained"] == 3 and info["best_epoch"] == 3 and info["stopped_at_plateau"]
    m = run.metrics()
    assert m[(m.unit == "finetuned") & (m.metric == "train_steps")].value.item() == 30
    assert "teacher epoch 3: dev score 0.7030 after 30 steps" in run.log_path.read_text()  # progress as it goes


def test_plateau_stop_keeps_the_best_weights():
    import torch

    from kaviz.stages.methods import PlateauStop

    model = torch.nn.Linear(2, 1)
    seq = iter([0.8, 0.7])

    def ev(m):
        s = next(seq)
        return {"score": s}

    stop = PlateauStop(model, ev, steps_per_epoch=1, delta=0.5)
    best = model.weight.detach().clone()
    assert stop(1) is False
    with torch.no_grad():
        model.weight.add_(1.0)
    assert stop(2) is True  # lost 10 points
    assert stop.restore_best() == 1
    assert torch.equal(model.weight, best)


def test_units_store_their_dev_predictions(tiny_run):
    """Every unit keeps its dev predictions, and they reproduce the stored score exactly."""
    from kaviz.data.base import compute_metrics
    from kaviz.data.tasks import load_task

    preds = tiny_run.unit_table("predictions")
    m = tiny_run.metrics()
    spec = load_task(RunConfig.from_dict(tiny_run.config).task, seed=42).spec
    for unit, df in preds.groupby("unit"):
        assert list(df.example) == list(range(len(df)))
        got = compute_metrics(spec, df.prediction.to_numpy().astype(int), df.label.to_numpy().astype(int))
        want = m[(m.unit == unit) & (m.metric == spec.main_metric)].value.item()
        assert got[spec.main_metric] == pytest.approx(want, abs=1e-12), unit
    assert set(preds.unit) == set(m.unit)


def test_an_nm_pattern_run_stores_nm_students(tmp_path):
    """pruning.pattern 2:4: every encoder matrix of every pattern method's checkpoint keeps exactly 2
    of each 4 consecutive inputs, the measured sparsity is 50%, and the unit records the pattern."""
    from kaviz.analysis.unit_view import load_unit_model
    from kaviz.core.structure import prunable_linears

    methods = ["oneshot-magnitude", "gradual-magnitude", "knowledge-aware"]
    cfg = tiny_config(methods=methods, sparsities=[0.5], pruning={"max_steps": 4, "learning_rate": 1e-3,
                      "mask_updates": 2, "pattern": "2:4"}, analysis={"enabled": False})  # fmt: skip
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    units = run.units().set_index("unit")
    for method in methods:
        unit = f"pruned_{method}_s0.5_seed42"
        assert units.loc[unit, "info"]["pattern"] == "2:4"
        for name, lin in prunable_linears(load_unit_model(run, unit)).items():
            kept = (lin.weight != 0).reshape(-1, 4).sum(1)
            assert (kept == 2).all(), (unit, name)
    sp = run.metrics().query("metric == 'encoder_sparsity' and stage == 'pruned'").value
    assert sp.to_numpy() == pytest.approx(0.5)


@pytest.fixture(scope="module")
def recent_run(tmp_path_factory):
    """The methods researchers compare against today, end to end on the tiny model, analysed."""
    cfg = tiny_config(
        name="recent",
        methods=["movement", "wanda", "sparsegpt", "structured"],
        sparsities=[0.5],
        pruning={"max_steps": 6, "learning_rate": 1e-3, "mask_updates": 3, "calibration_examples": 40,
                 "recovery_steps": 2},
    )  # fmt: skip
    run = Pipeline(cfg, RunStore(tmp_path_factory.mktemp("runs")), progress=False).run()
    from kaviz.analysis.analyzer import Analyzer

    Analyzer(run, progress=False).run()
    return run


def test_recent_methods_run_in_the_grid(recent_run):
    from kaviz.analysis.analyzer import knowledge_table

    m = recent_run.metrics()
    sp = m[(m.metric == "encoder_sparsity") & (m.stage == "pruned")].set_index("method").value
    assert sp["movement"] == pytest.approx(0.5, abs=1e-3) and sp["wanda"] == pytest.approx(0.5, abs=1e-3)
    assert sp["sparsegpt"] == pytest.approx(0.5, abs=0.01)  # rounded per column block
    assert 0.5 <= sp["structured"] < 0.55  # whole heads and neurons: at least the target
    info = recent_run.units().set_index("method")["info"]
    assert info["wanda"]["calibration_examples"] == 40 and len(info["wanda"]["calibration_indices"]) == 40
    assert info["wanda"]["calibration_indices"] == info["sparsegpt"]["calibration_indices"]  # same seed, same set
    steps = m[m.metric == "train_steps"].set_index("method").value
    assert steps["wanda"] == 2 and steps["structured"] == 2 and steps["movement"] == 6  # recovery / budget
    k = knowledge_table(recent_run)
    assert set(k[k.stage == "pruned"].method) == {"movement", "wanda", "sparsegpt", "structured"}
    removed = info["structured"]["removed_heads"]
    assert removed  # heads did go (tiny model, 50%)
    marked = k[(k.method == "structured") & k.pruned.astype(bool)][["layer", "head"]].drop_duplicates()
    assert len(marked) == sum(len(v) for v in removed.values())  # the attention tables mark removed heads


def test_structured_checkpoint_is_the_masked_model_and_shrinks_to_the_same_logits(recent_run):
    import torch

    from kaviz.analysis.unit_view import load_unit_model
    from kaviz.train.structured_shrink import plan_from_zeros, shrink

    unit = "pruned_structured_s0.5_seed42"
    model = load_unit_model(recent_run, unit)
    removed = recent_run.units().set_index("unit")["info"][unit]["removed_heads"]
    chosen = plan_from_zeros(model)
    assert {str(k): v for k, v in chosen["heads"].items() if v} == removed
    ids = torch.randint(5, 90, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        small = shrink(model, chosen)
        after = small(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_every_unit_measures_what_it_buys_at_inference(recent_run):
    """The ``inference`` table: the teacher against itself is exactly 1x, the structured unit's shrunk
    model has the parameters its plan leaves, and sparse files of 50%-sparse units are no larger than
    the dense ones (CSR only where it is smaller)."""
    t = recent_run.unit_table("inference").merge(recent_run.units()[["unit", "stage", "method"]], on="unit")
    assert set(t.batch_size) == {1, 32}
    teacher = t[(t.stage == "finetuned") & (t.variant == "dense")]
    assert (teacher.speedup == 1.0).all() and (teacher.size_ratio == 1.0).all()
    shrunk = t[(t.method == "structured") & (t.variant == "shrunk")]
    dense = t[(t.method == "structured") & (t.variant == "dense")]
    info = recent_run.units().set_index("method")["info"]["structured"]
    heads = sum(len(v) for v in info["removed_heads"].values())
    d, head_dim = 64, 16  # the tiny model: 64 wide, 4 heads
    gone = heads * (4 * d * head_dim + 3 * head_dim) + info["removed_neurons"] * (2 * d + 1)  # weights + biases
    assert len(shrunk) == 2 and (dense.params.to_numpy() - shrunk.params.to_numpy() == gone).all()
    assert (shrunk.disk_bytes.to_numpy() < dense.disk_bytes.to_numpy()).all()
    assert t[t.variant.isin(["dense", "shrunk"])].median_s.gt(0).all()


def test_bad_inputs_of_the_recent_methods_fail_before_any_training(tmp_path):
    """A structured target that would empty a layer, and more calibration examples than the training
    set has: config errors naming the field, raised before the run folder exists."""
    from kaviz.core.errors import ConfigError
    from kaviz.stages.recent import structured_limit
    from kaviz.train.models import tiny_bert_config

    limit = structured_limit(tiny_bert_config(2, 2))
    assert limit == pytest.approx(1 - (4 * 64 * 16 + 2 * 64) / (4 * 64 * 64 + 2 * 64 * 256))  # 64 wide, 4 heads
    store = RunStore(tmp_path)
    with pytest.raises(ConfigError, match=r"sparsities: structured pruning can remove at most 91\.4%"):
        Pipeline(tiny_config(methods=["structured"], sparsities=[0.95]), store, progress=False).run()
    with pytest.raises(ConfigError, match="calibration_examples: wanda would calibrate on 500 examples.*has 160"):
        Pipeline(tiny_config(methods=["wanda"], pruning={"calibration_examples": 500}), store, progress=False).run()
    assert not any(tmp_path.iterdir())


def test_a_teacher_no_better_than_the_constant_answer_is_flagged_in_the_log(tmp_path, monkeypatch):
    """A teacher that always answers class 0 (zero classifier weights, biased) scores the constant
    answer at best: the log says so, naming the class and both numbers."""
    import torch

    import kaviz.stages.pipeline as pipeline
    from kaviz.stages.recipe import Outcome

    def constant_teacher(ctx, seed):
        model = ctx.pretrained()
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([5.0, 0.0]))
        return Outcome(model, None, {})

    monkeypatch.setattr(pipeline, "finetune", constant_teacher)
    cfg = tiny_config(methods=["oneshot-magnitude"], sparsities=[0.5], analysis={"enabled": False})
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    log = run.log_path.read_text()
    assert "WARNING: the fine-tuned teacher scores" in log and "no better than always answering class" in log

"""The bad-input corpus (tests/bad_inputs/README.md): every case is refused by the CLI with exit
code 2 and one ``kaviz: error:`` line naming the problem, no traceback, and the store it was
pointed at keeps every file it held byte for byte (a case that fails after creating its own run
leaves that run marked failed, never running or complete)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from kaviz.cli import main
from kaviz.store import RunStore
from tests.helpers import store_config, store_units, tiny_bert

CORPUS = Path(__file__).parent / "bad_inputs"
SENTINEL = "kaviz-pickle-ran"


@dataclass
class Case:
    id: str
    argv: Callable[[Path, Path], list[str]]  # (tmp folder, store root) -> CLI arguments
    expect: str  # a regex the error line must match


def _yaml(name: str, expect: str) -> Case:
    return Case(name, lambda tmp, store: ["run", str(CORPUS / name), "--out", str(store)], expect)


CONFIG_CASES = [
    _yaml("unknown_top_key.yaml", r"learnign_rate"),
    _yaml("unknown_nested_key.yaml", r"training.*lr"),
    _yaml("wrong_type_batch.yaml", r"batch_size.*'big'"),
    _yaml("wrong_type_section.yaml", r"model"),
    _yaml("sparsity_above_one.yaml", r"1\.5 is outside \(0, 1\)"),
    _yaml("sparsity_zero.yaml", r"0\.0 is outside"),
    _yaml("sparsity_duplicate.yaml", r"duplicates"),
    _yaml("unknown_method.yaml", r"unknown method 'movement-pruning'"),
    _yaml("no_methods.yaml", r"at least one method"),
    _yaml("not_a_mapping.yaml", r"mapping"),
    _yaml("malformed.yaml", r"cannot parse"),
    _yaml("malformed.json", r"cannot parse"),
    _yaml("name_traversal.yaml", r"name.*\.\./\.\./x"),
    _yaml("name_absolute.yaml", r"name.*/tmp/x"),
    _yaml("extra_seed_sparsity_not_planned.yaml", r"extra_seed_sparsities"),
    _yaml("unknown_device.yaml", r"training.device.*tpu"),
    _yaml("unknown_precision.yaml", r"precision.*fp8"),
    _yaml("unknown_task.yaml", r"unknown task 'squad'"),
    _yaml("negative_steps.yaml", r"max_steps"),
    _yaml("missing_model_path.yaml", r"no/such/model.*does not exist"),
    _yaml("cka_kind_typo.yaml", r"cka_kinds: unknown similarity 'linear_ckaa' \(did you mean 'linear_cka'\?\)"),
    _yaml("sts_path_missing.yaml", r"sts_path.*no/such/STS-B"),
]


# ----- generated files -----------------------------------------------------------------------


def _config(tmp: Path, run_name: str, task: dict) -> Path:
    data = {
        "name": run_name,
        "model": {"name_or_path": "tiny"},
        "task": task,
        "methods": ["oneshot-magnitude"],
        "sparsities": [0.5],
        "training": {"max_steps": 2},
        "analysis": {"enabled": False},
    }
    path = tmp / f"{run_name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _custom(tmp: Path, content: bytes | str, suffix: str = ".csv", **task) -> list[str]:
    f = tmp / f"data{suffix}"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    task = {"name": "custom", "path": str(f), "text_columns": ["text"], "label_column": "label", **task}
    return ["run", str(_config(tmp, "data", task)), "--out"]


def _glue(tmp: Path, train: bytes, dev: bytes | None = b"sentence\tlabel\ngood film\t1\nbad film\t0\n") -> list[str]:
    folder = tmp / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_bytes(train)
    if dev is not None:
        (folder / "dev.tsv").write_bytes(dev)
    return ["run", str(_config(tmp, "glue", {"name": "sst2", "path": str(folder)})), "--out"]


GOOD_ROWS = "text,label\n" + "".join(f"film number {i},{i % 2}\n" for i in range(40))


def _model_folder(tmp: Path, weights: Callable[[Path, dict], None]) -> Path:
    """A save_pretrained folder of a tiny BERT classifier whose weights file is then broken."""

    folder = tmp / "model"
    small = {"layers": 1, "hidden": 16, "heads": 2, "inter": 32, "vocab": 50, "kaviz_attention": False}
    tiny_bert(**small).save_pretrained(folder)
    state = {k: v.clone() for k, v in tiny_bert(**small, seed=1).state_dict().items()}
    weights(folder, state)
    return folder


def _import(tmp: Path, teacher: Path) -> list[str]:
    return [
        "import",
        "--name",
        f"ext-{tmp.name[-12:]}",
        "--pretrained",
        "tiny",
        "--teacher",
        str(teacher),
        "--student",
        f"s@0.5={teacher}",
        "--task",
        "demo",
        "--out",
    ]


def _corrupt(folder: Path, state: dict) -> None:
    (folder / "model.safetensors").write_bytes(os.urandom(4096))


def _truncated(folder: Path, state: dict) -> None:
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {SENTINEL}",))


def _pickle_only(folder: Path, state: dict) -> None:
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"state": _Payload()}, f)


def _other_store_run(tmp: Path, store: Path, damage: Callable[[Path], None]) -> list[str]:
    """A copy of the good run in another folder (as copied from another machine), then damaged."""
    other = tmp / "elsewhere"
    shutil.copytree(store / "good", other / "good")
    damage(other / "good")
    return ["export", str(other / "good")]


def _truncate_parquet(run: Path) -> None:
    f = next(run.glob("units/*/metrics.parquet"))
    f.write_bytes(f.read_bytes()[:40])


def _future_schema(run: Path) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m["schema_version"] = 99
    (run / "manifest.json").write_text(json.dumps(m))


def _garbled_manifest(run: Path) -> None:
    (run / "manifest.json").write_text('{"schema_version": 1, "units": ')


def _link_out(tmp: Path, store: Path) -> list[str]:
    outside = tmp / "outside"
    shutil.copytree(store / "good", outside / "good")
    link = store / "escape"
    if not link.exists():
        link.symlink_to(outside / "good", target_is_directory=True)
    return ["export", str(link)]


GENERATED_CASES = [
    Case("config_not_utf8", lambda t, s: _bytes_config(t, s), r"not UTF-8"),
    Case("config_missing", lambda t, s: ["run", str(t / "nope.yaml"), "--out", str(s)], r"not found"),
    Case("custom_missing_label_column", lambda t, s: [*_custom(t, GOOD_ROWS, label_column="stars"), str(s)], r"stars"),
    Case("custom_missing_text_column", lambda t, s: [*_custom(t, GOOD_ROWS, text_columns=["review"]), str(s)], r"review"),
    Case("custom_empty_file", lambda t, s: [*_custom(t, b""), str(s)], r"empty"),
    Case("custom_header_only", lambda t, s: [*_custom(t, "text,label\n"), str(s)], r"no (data )?rows|empty"),
    Case("custom_ragged_csv", lambda t, s: [*_custom(t, GOOD_ROWS + "extra,1,2\n"), str(s)], r"line 42.*expected 2 fields"),
    Case("custom_broken_jsonl", lambda t, s: [*_custom(t, '{"text": "a", "label": 1}\n{"text": \n', ".jsonl"), str(s)],
         r"line 2.*not valid JSON"),
    Case("custom_labels_not_numbers_for_regression",
         lambda t, s: [*_custom(t, GOOD_ROWS.replace(",1\n", ",high\n"), task_type="regression"), str(s)], r"high"),
    Case("glue_ragged_tsv", lambda t, s: [*_glue(t, b"sentence\tlabel\ngood\t1\nbad\t0\textra\n"), str(s)],
         r"line 3"),
    Case("glue_not_utf8", lambda t, s: [*_glue(t, b"sentence\tlabel\ngood \xff\xfe film\t1\n"), str(s)], r"UTF-8"),
    Case("glue_label_out_of_range", lambda t, s: [*_glue(t, b"sentence\tlabel\ngood\t1\nodd\t7\n"), str(s)],
         r"label.*7|7.*label"),
    Case("glue_empty_train", lambda t, s: [*_glue(t, b""), str(s)], r"empty|no rows"),
    Case("glue_missing_dev", lambda t, s: [*_glue(t, b"sentence\tlabel\ngood\t1\n", dev=None), str(s)], r"dev\.tsv"),
    Case("teacher_corrupt_safetensors", lambda t, s: [*_import(t, _model_folder(t, _corrupt)), str(s)],
         r"cannot load a model from .*model"),
    Case("teacher_truncated_safetensors", lambda t, s: [*_import(t, _model_folder(t, _truncated)), str(s)],
         r"cannot load a model from .*model"),
    Case("teacher_pickle_posing_as_checkpoint", lambda t, s: [*_import(t, _model_folder(t, _pickle_only)), str(s)],
         r"pytorch_model\.bin.*never unpickles"),
    Case("teacher_folder_without_config", lambda t, s: [*_import(t, _empty_dir(t)), str(s)], r"no config\.json"),
    Case("run_truncated_parquet", lambda t, s: _other_store_run(t, s, _truncate_parquet), r"metrics\.parquet"),
    Case("run_future_schema", lambda t, s: _other_store_run(t, s, _future_schema), r"schema.*99|upgrade kaviz"),
    Case("run_garbled_manifest", lambda t, s: _other_store_run(t, s, _garbled_manifest), r"manifest"),
    Case("run_link_leaving_runs_folder", _link_out, r"outside|link"),
    Case("run_name_traversal_flag", lambda t, s: ["run", str(_config(t, "ok", {"name": "demo"})), "--name", "../../x",
                                                  "--out", str(s)], r"\.\./\.\./x"),
    Case("run_name_absolute_flag", lambda t, s: ["run", str(_config(t, "ok", {"name": "demo"})), "--name", "/etc/x",
                                                 "--out", str(s)], r"/etc/x"),
    Case("export_traversal", lambda t, s: ["export", str(s / ".." / "..")], r"name|run"),
    Case("copy_onto_existing_run", lambda t, s: ["copy", str(s / "good"), str(s)], r"already exists"),
    Case("import_bad_student_spec", lambda t, s: ["import", "--name", "ext2", "--pretrained", "tiny", "--teacher",
                                                  str(t), "--student", "no-sparsity=path", "--task", "demo",
                                                  "--out", str(s)], r"student|label@sparsity"),
    Case("set_unknown_key", lambda t, s: ["run", str(_config(t, "ok", {"name": "demo"})), "--set", "training.speed=9",
                                          "--out", str(s)], r"speed"),
]  # fmt: skip


def _bytes_config(tmp: Path, store: Path) -> list[str]:
    f = tmp / "latin1.yaml"
    f.write_bytes("name: caf\xe9\n".encode("latin-1"))
    return ["run", str(f), "--out", str(store)]


def _empty_dir(tmp: Path) -> Path:
    d = tmp / "empty-model"
    d.mkdir()
    return d


CASES = CONFIG_CASES + GENERATED_CASES


# ----- the store every case is pointed at --------------------------------------------------------


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """A runs folder with one finished run, 'good' (metrics, a table and a checkpoint)."""

    root = tmp_path_factory.mktemp("bad-inputs") / "runs"
    run = RunStore(root).create_run(store_config("good"), units=store_units())
    for u in store_units():
        run.start_unit(u["unit"])
        run.finish_unit(
            u["unit"], [{"metric": "score", "value": 0.8}], tables={"history": pd.DataFrame({"step": [1.0]})}
        )
    run.save_checkpoint("finetuned", tiny_bert(layers=1, hidden=16, heads=2, inter=32, vocab=50, kaviz_attention=False))
    run.set_status("complete")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and "escape" not in p.parts
    }


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    shipped = {p.name for p in CORPUS.iterdir() if p.suffix in (".yaml", ".json")}
    assert shipped == {c.id for c in CONFIG_CASES}  # every shipped file is a case, and the reverse


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_damages_nothing(case, store_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pickle payload would leave its sentinel here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(store_root)
    argv = case.argv(tmp_path, store_root)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("kaviz: error:")]
    assert code == 2, f"exit {code}\nstdout: {out.getvalue()[-2000:]}\nstderr: {text[-2000:]}"
    assert len(errors) == 1, text[-2000:]
    assert "Traceback" not in text
    message = text[text.index("kaviz: error:") :]  # the line and its indented continuation (one per problem)
    assert re.search(case.expect, message), message
    after = snapshot(store_root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing stored was changed
    for new_run in {k.split(os.sep)[0] for k in after if k not in before}:  # a run the case itself started
        assert RunStore(store_root).open_run(new_run).status == "failed", new_run
    assert not (tmp_path / SENTINEL).exists(), "a pickle was unpickled"


def test_the_store_still_lists_after_every_case(store_root):
    code = main(["runs", str(store_root)])
    assert code == 0
    assert RunStore(store_root).open_run("good").status == "complete"


def test_pickle_payload_works_when_unpickled(tmp_path, monkeypatch):
    """The payload the pickle case plants really runs code when unpickled: refusing it matters."""
    monkeypatch.chdir(tmp_path)
    pickle.loads(pickle.dumps(_Payload()))  # noqa: S301 - deliberately, on our own payload
    assert (tmp_path / SENTINEL).exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(pickle.dumps(_Payload())), weights_only=True)


@pytest.mark.parametrize("table", ["metrics", "knowledge"])
def test_the_app_names_a_damaged_table_instead_of_crashing(table, tmp_path, monkeypatch):
    """A run folder with a truncated table (copied half-way, disk full): every page that reads the
    table shows st.error naming the file; none raises."""
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).parents[1]
    runs = tmp_path / "runs"
    shutil.copytree(root / "assets" / "runs" / "sst2-check", runs / "sst2-check")
    damaged = sorted((runs / "sst2-check").glob(f"units/*/{table}.parquet"))[-1]
    damaged.write_bytes(damaged.read_bytes()[:40])
    monkeypatch.setenv("KAVIZ_RUNS", str(runs))
    app = AppTest.from_file(str(root / "app.py"), default_timeout=120)
    app.run()
    pages = {"metrics": ["1_overview", "2_accuracy_vs_sparsity"], "knowledge": ["3_knowledge_flow", "4_attention"]}
    for page in pages[table]:
        app.switch_page(f"pages/{page}.py").run()
        assert not app.exception, (page, [e.message for e in app.exception])
        assert any(damaged.name in e.value and damaged.parent.name in e.value for e in app.error), (page, app.error)

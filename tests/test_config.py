import pytest

from kaviz.core.config import ConfigError, RunConfig


def test_defaults_validate_and_round_trip_json_yaml(tmp_path):
    cfg = RunConfig(name="x", sparsities=[0.5, 0.9], extra_seeds=[7])
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    for suffix in (".json", ".yaml"):
        p = tmp_path / f"c{suffix}"
        cfg.save(p)
        assert RunConfig.load(p) == cfg


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'sparsities'"):
        RunConfig.from_dict({"sparsitys": [0.5]})
    with pytest.raises(ConfigError, match="pruning.mask_update"):
        RunConfig.from_dict({"pruning": {"mask_update": 3}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sparsities": [1.5]}, "outside"),
        ({"sparsities": []}, "at least one"),
        ({"methods": ["magnitude"]}, "did you mean 'oneshot-magnitude'"),
        ({"pruning": {"mask_updates": "x"}}, "expected an integer"),
        ({"training": {"learning_rate": "fast"}}, "expected a number"),
        ({"training": {"device": "tpu"}}, "training.device"),
        ({"seed": True}, "expected an integer"),
        ({"name": "../x"}, "name"),
        ({"task": {"name": "sst3"}}, "did you mean 'sst2'"),
        ({"task": {"name": "custom"}}, "task.path"),
        ({"pruning": {"student_init": "random"}}, "not one of"),
        ({"distill": {"temperature": 0}}, "temperature"),
        ({"extra_seed_sparsities": [0.3]}, "not in sparsities"),
        ({"model": "bert"}, "expected a mapping"),
        ({"import_students": ["bad"]}, "label@sparsity"),
        ({"pruning": {"pattern": "2-4"}}, "pruning.pattern: pattern '2-4' is not 'N:M'"),
        ({"pruning": {"pattern": "4:2"}}, "need 0 < N < M"),
        ({"pruning": {"pattern": "2:4"}, "sparsities": [0.5, 0.9]}, r"0.5 sparse.*got \[0.9\]"),
        ({"pruning": {"pattern": "2:4"}, "sparsities": [0.5], "extra_units": [{"sparsities": [0.7]}]}, r"got \[0.7\]"),
        ({"pruning": {"calibration_examples": 0}}, "calibration_examples"),
        ({"pruning": {"pattern": 124}}, 'unquoted N:M such as 2:4 as a base-60 number: quote it, "2:4"'),
        ({"pruning": {"recovery_steps": -1}}, "recovery_steps"),
    ],
)
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsities: [0.5\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        RunConfig.load(bad)
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.load(lst)


def test_help_table_covers_every_field():
    rows = RunConfig().help_table()
    names = [r[0] for r in rows]
    assert "pruning.mask_updates" in names and "distill.temperature" in names
    assert all(r[1] for r in rows), "every field has help text"


def test_yaml_scientific_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `5e-5` as a string; float fields take it as the number it means."""
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 5e-5\npruning:\n  learning_rate: 1E-4\n")
    cfg = RunConfig.load(path)
    assert cfg.training.learning_rate == 5e-5 and cfg.pruning.learning_rate == 1e-4
    with pytest.raises(ConfigError, match="training.learning_rate: expected a number"):
        RunConfig.from_dict({"training": {"learning_rate": "fast"}})


def test_similarity_names_match_the_registry():
    from kaviz.core.names import SIMILARITY_KINDS
    from kaviz.measure.similarity import METRICS

    assert tuple(METRICS) == SIMILARITY_KINDS


def test_unknown_cka_kind_fails_when_the_config_is_built():
    from kaviz.core.config import ConfigError, RunConfig

    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"analysis": {"cka_kinds": ["linear_ckaa"]}})
    assert e.value.problems[0][0] == "analysis.cka_kinds"
    assert "did you mean 'linear_cka'?" in str(e.value)


def test_config_error_carries_its_problems():
    from kaviz.core.config import ConfigError, RunConfig
    from kaviz.core.errors import KavizError

    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"name": "../x", "sparsities": [1.5]})
    assert isinstance(e.value, KavizError)
    assert [f for f, _ in e.value.problems] == ["name", "sparsities"]
    assert e.value.lines()[1] == "sparsities: 1.5 is outside (0, 1)"
    assert str(e.value).startswith("invalid config:\n  - name: ")


def test_task_aliases_are_resolved_in_one_place():
    from kaviz.core.config import RunConfig
    from kaviz.core.validation import canonical_task

    assert RunConfig.from_dict({"task": {"name": "SST-2"}}).task.name == "sst2"
    assert canonical_task("STS_B") == "stsb" and canonical_task("squad") is None


def test_imports_are_parsed_by_the_config_checker():
    from kaviz.core.errors import ConfigError
    from kaviz.core.validation import parse_import
    from kaviz.stages.pipeline import parse_imports

    assert parse_imports(["obert@0.9=./x"]) == [("obert", "./x", 0.9)]
    with pytest.raises(ConfigError, match="label@sparsity=path_or_hub_id"):
        parse_import("obert=./x")


def test_a_pattern_leaves_other_methods_free_and_the_defaults_are_the_papers():
    from kaviz.core.registry import DEFAULT_METHODS

    cfg = RunConfig.from_dict({"pruning": {"pattern": "2:4"}, "sparsities": [0.5], "methods": ["knowledge-aware"]})
    assert cfg.pruning.pattern == "2:4"
    RunConfig.from_dict({"pruning": {"pattern": "1:4"}, "sparsities": [0.9], "methods": ["small-dense"]})
    assert RunConfig().methods == list(DEFAULT_METHODS)


def test_every_shipped_benchmark_config_loads_and_plans(tmp_path):
    """benchmarks/configs/*.yaml: each is a valid RunConfig that plans its grid (the files users copy)."""
    from pathlib import Path

    from kaviz.stages.grid import plan_units

    configs = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = RunConfig.load(path).validate()
        units = plan_units(cfg)
        assert cfg.name == path.stem and any(u["stage"] == "pruned" for u in units), path.name
    official = RunConfig.load(configs[0].with_name("paper-mrpc-official.yaml"))
    assert (official.pruning.optimizer, official.pruning.warmup_ratio, official.distill.projection) == (
        "bertadam",
        0.0,
        "none",
    )

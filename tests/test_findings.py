"""kaviz.analysis.findings: each rule on a hand-made table built to trigger it (the exact sentence or
its numbers) and one built not to (None); findings() on empty and partial inputs; the shipped
showcase run against numbers recomputed here from its tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaviz.analysis import findings as fd
from kaviz.core.schema import KNOWLEDGE_COLUMNS, METRIC_COLUMNS, UNIT_KEYS

KA, GM, OS, SD = "knowledge-aware", "gradual-magnitude", "oneshot-magnitude", "small-dense"
RUNS = Path(__file__).resolve().parents[1] / "assets" / "runs"


# ----- hand-made tables -----------------------------------------------------------------------------------


def _unit(stage: str, method: str, sparsity: float, seed: int, budget: float) -> str:
    if stage != "pruned":
        return stage
    return f"pruned_{method}_s{sparsity:g}_seed{seed}" + ("" if math.isnan(budget) else f"_b{budget:g}")


def metrics(*units: tuple, metric: str = "accuracy") -> pd.DataFrame:
    """Units as (stage or method, sparsity, score[, seed[, budget]]); ``score`` equals ``metric``."""
    rows = []
    for spec in units:
        who, s, score, *rest = spec
        seed, budget = rest[0] if rest else 1, rest[1] if len(rest) > 1 else math.nan
        stage, method = (who, who) if who in ("pretrained", "finetuned") else ("pruned", who)
        unit = _unit(stage, method, s, seed, budget)
        for name, value in (("score", score), (metric, score), ("encoder_sparsity", s - 0.01)):
            rows.append(dict(zip(METRIC_COLUMNS, ["r", stage, method, s, seed, budget, unit, name, value])))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def knowledge_rows(who: str, sparsity: float, metric: str, values, *, seed: int = 1, reference: str = "finetuned",
                   whole_model: bool = False, ref_layers=None) -> list[dict]:  # fmt: skip
    """Per-layer rows (layer 0..n-1) of ``values`` or, with ``whole_model``, one model row (reference self)."""
    stage, method = (who, who) if who in ("pretrained", "finetuned") else ("pruned", who)
    keys = dict(zip(UNIT_KEYS, [_unit(stage, method, sparsity, seed, math.nan), stage, method, sparsity, seed, np.nan]))
    if whole_model:
        return [keys | dict(zip(KNOWLEDGE_COLUMNS, ["self", -1, None, -1, metric, values, False]))]
    refs = ref_layers or range(len(values))
    return [
        keys | dict(zip(KNOWLEDGE_COLUMNS, [reference, i, float(r), -1, metric, v, False]))
        for i, (r, v) in enumerate(zip(refs, values))
    ]


def knowledge(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for g in groups for r in g], columns=[*UNIT_KEYS, *KNOWLEDGE_COLUMNS])


def predictions(n_pos: int = 7, n_neg: int = 3, units=("finetuned",)) -> pd.DataFrame:
    """Dev labels: ``n_pos`` ones then ``n_neg`` zeros (best constant accuracy n_pos / n)."""
    y = [1.0] * n_pos + [0.0] * n_neg
    return pd.DataFrame(
        [{"unit": u, "example": i, "label": v, "prediction": 1.0} for u in units for i, v in enumerate(y)]
    )


def rule(fn, m, k=None, p=None, i=None, main_budget=None):
    return fn(fd.tables(m, k, p, i, main_budget=main_budget))


BASE = [("pretrained", 0.0, 0.5), ("finetuned", 0.0, 0.9), (KA, 0.5, 0.88), (KA, 0.9, 0.855), (GM, 0.5, 0.87),
        (GM, 0.9, 0.81), (SD, 0.9, 0.846)]  # fmt: skip


# ----- score kept ------------------------------------------------------------------------------------------


def test_score_kept_at_the_highest_sparsity_all_methods_reached():
    f = rule(fd.score_kept, metrics(*BASE))
    assert f.text == (
        "At 90%, knowledge-aware (paper) keeps 95.0% of the teacher's accuracy (85.5 of 90.0); "
        "small-dense 94.0%, gradual magnitude 90.0%."
    )
    assert f.numbers["kept:knowledge-aware"] == pytest.approx(0.855 / 0.9)
    assert f.numbers["kept:gradual-magnitude"] == pytest.approx(0.81 / 0.9) and f.page == fd.SCORE_PAGE


def test_score_kept_averages_seeds_and_reads_the_main_budget_only():
    m = metrics(("finetuned", 0.0, 0.8), (KA, 0.9, 0.7, 1, 2.0), (KA, 0.9, 0.74, 2, 2.0), (KA, 0.9, 0.1, 1, 0.5))
    f = rule(fd.score_kept, m, main_budget=2.0)
    assert f.numbers["score:knowledge-aware"] == pytest.approx(0.72)
    assert "90.0% of the teacher's accuracy (72.0 of 80.0)." in f.text
    assert rule(fd.score_kept, m) is None  # main budget None: only units without a budget


def test_score_kept_needs_a_teacher_and_a_pruned_unit():
    assert rule(fd.score_kept, metrics((KA, 0.9, 0.8))) is None
    assert rule(fd.score_kept, metrics(("finetuned", 0.0, 0.9))) is None


# ----- the constant answer ----------------------------------------------------------------------------------


def test_teacher_that_does_not_beat_the_constant_answer_is_loud():
    m = metrics(("finetuned", 0.0, 0.705), (KA, 0.9, 0.7))
    f = rule(fd.teacher_vs_constant, m, p=predictions())
    assert f.text == (
        "The fine-tuned teacher's accuracy (70.5) does not beat the constant answer (70.0, always class 1) by more "
        "than 1.0 point: the scores of its students say nothing about knowledge kept."
    )
    assert f.severity == fd.WARNING and f.numbers["constant"] == pytest.approx(0.7)
    assert fd.findings(m, None, predictions())[0].rule == "teacher_vs_constant"  # warnings first


def test_teacher_above_the_constant_answer_or_no_labels_says_nothing():
    assert rule(fd.teacher_vs_constant, metrics(*BASE), p=predictions()) is None
    assert rule(fd.teacher_vs_constant, metrics(("finetuned", 0.0, 0.6))) is None  # no predictions
    m = metrics(("finetuned", 0.0, 0.1), metric="pearson")  # regression: no constant answer
    assert rule(fd.teacher_vs_constant, m, p=predictions()) is None


def test_constant_floor_names_methods_that_fall_and_from_where():
    m = metrics(*BASE, (OS, 0.5, 0.85), (OS, 0.8, 0.705), (OS, 0.9, 0.70))
    f = rule(fd.constant_floor, m, p=predictions())
    assert f.text == (
        "Within 1.0 point of the constant answer (accuracy 70.0, always class 1): one-shot magnitude from 80% "
        "(70.5); the other methods stay above it."
    )
    assert f.numbers["from:oneshot-magnitude"] == 0.8 and f.numbers["score:oneshot-magnitude"] == pytest.approx(0.705)


def test_constant_floor_when_every_method_falls():
    m = metrics(("finetuned", 0.0, 0.9), (OS, 0.8, 0.70), (OS, 0.9, 0.69), (KA, 0.8, 0.8), (KA, 0.9, 0.71))
    f = rule(fd.constant_floor, m, p=predictions())
    assert f.text.endswith(
        "one-shot magnitude from 80% (70.0), knowledge-aware (paper) from 90% (71.0); from 90% on, no method beats it."
    )
    assert f.numbers["sparsity"] == 0.9


def test_constant_floor_when_no_method_falls():
    m = metrics(*BASE, (OS, 0.8, 0.70), (OS, 0.9, 0.75))  # fell at 80% but not at 90%: not a floor
    f = rule(fd.constant_floor, m, p=predictions())
    assert f.text == (
        "No method falls to the constant answer (accuracy 70.0, always class 1): the lowest score, "
        "one-shot magnitude at 80%, is 70.0."
    )
    assert rule(fd.constant_floor, metrics(*BASE)) is None  # no predictions


# ----- where representations part ------------------------------------------------------------------------------


def test_representations_part_at_a_drop():
    k = knowledge(
        knowledge_rows(KA, 0.9, "linear_cka", [0.99, 0.95, 0.93, 0.71, 0.6]),
        knowledge_rows(KA, 0.9, "linear_cka", [0.2, 0.2, 0.2, 0.2, 0.2], reference="pretrained"),  # ignored
        knowledge_rows(KA, 0.5, "linear_cka", [0.1, 0.1, 0.1, 0.1, 0.1]),  # not its highest sparsity
        knowledge_rows(GM, 0.9, "linear_cka", [0.45, 0.4, 0.4, 0.4, 0.4]),
    )
    f = rule(fd.representations_part, metrics(*BASE), k)
    assert f.text == (
        "At 90%, the representations of knowledge-aware (paper) part from the teacher at layer 3 (linear CKA "
        "0.93 → 0.71); gradual magnitude parts from it at the embeddings (linear CKA 0.45)."
    )
    assert f.numbers == pytest.approx(
        {
            "sparsity": 0.9,
            "layer": 3.0,
            "before": 0.93,
            "at": 0.71,
            "layer:gradual-magnitude": 0.0,
            "at:gradual-magnitude": 0.45,
        }  # fmt: skip
    )
    assert f.page == fd.KNOWLEDGE_PAGE


def test_representations_stay_close_averaged_over_seeds_on_teacher_layers():
    k = knowledge(
        knowledge_rows(KA, 0.9, "linear_cka", [0.96, 0.92, 0.88], seed=1),
        knowledge_rows(KA, 0.9, "linear_cka", [0.94, 0.90, 0.92], seed=2),
        knowledge_rows(SD, 0.9, "linear_cka", [0.9, 0.6], ref_layers=[0, 2]),  # student layer 1 = teacher layer 2
    )
    f = rule(fd.representations_part, metrics(*BASE), k)
    assert f.text == (
        "At 90%, knowledge-aware (paper) stays close to the teacher at every layer (linear CKA at least 0.90, at "
        "layer 2); small-dense parts from it at layer 2 (linear CKA 0.90 → 0.60)."
    )
    assert f.numbers["lowest"] == pytest.approx(0.90) and f.numbers["layer"] == 2
    assert fd.parting_layer(pd.Series([0.9, 0.85, 0.8])) is None
    drift = knowledge(knowledge_rows(KA, 0.9, "linear_cka", [0.95, 0.87, 0.79, 0.71, 0.63]))  # < 0.1 a layer
    assert rule(fd.representations_part, metrics(*BASE), drift).text == (
        "At 90%, knowledge-aware (paper) drifts from the teacher with no sharp break (linear CKA at least 0.63, "
        "at layer 4)."
    )


def test_representations_part_needs_cka_of_the_followed_method():
    assert rule(fd.representations_part, metrics(*BASE)) is None
    k = knowledge(knowledge_rows(GM, 0.9, "linear_cka", [0.9, 0.5]))  # CKA of another method only
    assert rule(fd.representations_part, metrics(*BASE), k) is None


# ----- general knowledge ------------------------------------------------------------------------------------


def test_general_knowledge_from_pretrained_to_pruned():
    k = knowledge(
        knowledge_rows("pretrained", 0.0, "general_sts_spearman", 0.77, whole_model=True),
        knowledge_rows("finetuned", 0.0, "general_sts_spearman", 0.67, whole_model=True),
        knowledge_rows(KA, 0.9, "general_sts_spearman", 0.38, whole_model=True),
        knowledge_rows(GM, 0.9, "general_sts_spearman", 0.5, whole_model=True),
        knowledge_rows(KA, 0.9, "linear_cka", [0.9, 0.9]),
    )
    f = rule(fd.general_knowledge, metrics(*BASE), k)
    assert f.text == (
        "Fine-tuning alone lowered general knowledge (STS Spearman 0.77 → 0.67); knowledge-aware (paper) pruning "
        "to 90% lowered it to 0.38 (gradual magnitude 0.50)."
    )
    assert f.numbers == {"finetuned": 0.67, "sparsity": 0.9, "pruned:knowledge-aware": 0.38, "pretrained": 0.77,
                         "pruned:gradual-magnitude": 0.5}  # fmt: skip


def test_general_knowledge_loss_lower_is_better_and_without_pretrained():
    k = knowledge(
        knowledge_rows("finetuned", 0.0, "general_mlm_loss", 2.0, whole_model=True),
        knowledge_rows(KA, 0.9, "general_mlm_loss", 2.005, whole_model=True),
    )
    f = rule(fd.general_knowledge, metrics(*BASE), k)
    assert f.text == "Knowledge-aware (paper) pruning to 90% kept general knowledge (MLM Loss 2.00 → 2.00)."
    k2 = knowledge(
        knowledge_rows("pretrained", 0.0, "general_mlm_loss", 3.0, whole_model=True),
        knowledge_rows("finetuned", 0.0, "general_mlm_loss", 2.0, whole_model=True),
        knowledge_rows(KA, 0.9, "general_mlm_loss", 4.0, whole_model=True),
    )
    assert rule(fd.general_knowledge, metrics(*BASE), k2).text.startswith(
        "Fine-tuning alone raised general knowledge (MLM Loss 3.00 → 2.00); knowledge-aware (paper) pruning to 90% "
        "lowered it to 4.00"
    )


def test_general_knowledge_needs_the_probe():
    k = knowledge(knowledge_rows(KA, 0.9, "linear_cka", [0.9, 0.9]))
    assert rule(fd.general_knowledge, metrics(*BASE), k) is None
    k = knowledge(knowledge_rows("pretrained", 0.0, "general_sts_spearman", 0.77, whole_model=True))
    assert rule(fd.general_knowledge, metrics(*BASE), k) is None  # no teacher or pruned value


# ----- ordering and the paper's claim --------------------------------------------------------------------


def test_ordering_claim_holds():
    f = rule(fd.method_ordering, metrics(*BASE))
    assert f.text == (
        "Best method per sparsity: 50% knowledge-aware (paper) 88.0, 90% knowledge-aware (paper) 85.5. The paper's "
        "claim (knowledge-aware ≥ every other method from 90% on) holds in this run (at 90% 85.5 vs small-dense 84.6)."
    )
    assert f.numbers["claim_holds"] == 1.0 and f.severity == fd.INFO


def test_ordering_claim_does_not_hold_plainly():
    m = metrics(("finetuned", 0.0, 0.9), (KA, 0.9, 0.80), (GM, 0.9, 0.83), (KA, 0.95, 0.7), (GM, 0.95, 0.6))
    f = rule(fd.method_ordering, m)
    assert "does not hold in this run: at 90% 80.0 vs gradual magnitude 83.0." in f.text
    assert f.severity == fd.WARNING and f.numbers["claim_holds"] == 0.0
    assert f.numbers["gradual-magnitude@0.9"] == pytest.approx(0.83)


def unit_predictions(spec: dict[str, list[int]], labels: list[int]) -> pd.DataFrame:
    """Predictions tables: {unit: predictions} against shared dev ``labels``."""
    return pd.DataFrame(
        [
            {"unit": u, "example": i, "label": float(y), "prediction": float(p)}
            for u, preds in spec.items()
            for i, (p, y) in enumerate(zip(preds, labels))
        ]  # fmt: skip
    )


def test_ordering_states_the_paired_interval_of_each_difference():
    """200 dev examples; knowledge-aware right on 180, small-dense on the same 180 but 12 (separated:
    the paired interval of +6 points excludes 0), gradual magnitude on 178 others (a +1 point
    difference whose interval includes 0: within noise)."""
    n = 200
    y = [i % 2 for i in range(n)]
    wrong = lambda idx: [1 - v if i in idx else v for i, v in enumerate(y)]  # noqa: E731
    ka = wrong(set(range(20)))  # 90.0
    sd = wrong(set(range(32)))  # 84.0, its mistakes include every one of ka's
    gm = wrong(set(range(100, 122)))  # 89.0, different mistakes
    units = {f"pruned_{KA}_s0.9_seed1": ka, f"pruned_{SD}_s0.9_seed1": sd, f"pruned_{GM}_s0.9_seed1": gm}
    p = unit_predictions(units | {"finetuned": y}, y)
    m = metrics(("finetuned", 0.0, 1.0), (KA, 0.9, 0.90), (SD, 0.9, 0.84))
    f = rule(fd.method_ordering, m, p=p)
    assert "(at 90% 90.0 vs small-dense 84.0 (difference +6.0, 95% interval [+" in f.text
    assert f.numbers["diff@0.9"] == pytest.approx(0.06) and f.numbers["diff_low@0.9"] > 0.03
    assert f.numbers["separated"] == 1.0 and "every difference outside noise" in f.text
    close = rule(fd.method_ordering, metrics(("finetuned", 0.0, 1.0), (KA, 0.9, 0.90), (GM, 0.9, 0.89)), p=p)
    assert "vs gradual magnitude 89.0 (difference +1.0" in close.text and "within noise)" in close.text
    assert close.numbers["diff_low@0.9"] < 0 < close.numbers["diff_high@0.9"]
    assert close.numbers["separated"] == 0.0 and "cannot tell the methods apart" in close.text
    assert close.numbers["claim_holds"] == 1.0  # the means still order them; the words say how firmly


def test_ordering_does_not_speak_for_a_difference_it_has_no_interval_for():
    """Predictions at 90% only: the 95% difference (gradual ahead by 0.5) is tested on the means but
    has no interval, so the sentence does not call every difference outside noise."""
    n = 200
    y = [i % 2 for i in range(n)]
    wrong = lambda idx: [1 - v if i in idx else v for i, v in enumerate(y)]  # noqa: E731
    p = unit_predictions(
        {f"pruned_{KA}_s0.9_seed1": wrong(set(range(20))), f"pruned_{SD}_s0.9_seed1": wrong(set(range(32)))}
        | {"finetuned": y},
        y,
    )
    m = metrics(("finetuned", 0.0, 1.0), (KA, 0.9, 0.90), (SD, 0.9, 0.84), (KA, 0.95, 0.800), (SD, 0.95, 0.805))
    f = rule(fd.method_ordering, m, p=p)
    assert "every difference outside noise" not in f.text and "separated" not in f.numbers
    assert "1 of 2 differences have no interval (no stored dev predictions)" in f.text


def test_ordering_without_the_claim_method_or_a_second_method():
    f = rule(fd.method_ordering, metrics(("finetuned", 0.0, 0.9), (GM, 0.9, 0.8), (OS, 0.9, 0.6)))
    assert f.text.endswith("is not tested in this run.") and "claim_holds" not in f.numbers
    assert rule(fd.method_ordering, metrics(("finetuned", 0.0, 0.9), (KA, 0.9, 0.8), (KA, 0.95, 0.7))) is None


# ----- what pruning buys ---------------------------------------------------------------------------------------


def inference(rows) -> pd.DataFrame:
    cols = ["unit", "variant", "batch_size", "median_s", "speedup", "size_ratio"]
    return pd.DataFrame(rows, columns=cols)


def test_inference_gain_fastest_variant_at_batch_32():
    ka, gm = _unit("pruned", KA, 0.9, 1, math.nan), _unit("pruned", GM, 0.9, 1, math.nan)
    inf = inference([
        ("finetuned", "dense", 32, 0.1, 1.0, 1.0),
        (ka, "sparse", 32, 0.05, 1.8, 0.35), (ka, "dense", 32, 0.1, 1.0, 1.0), (ka, "sparse", 1, 0.01, 5.0, 0.35),
        (gm, "sparse", 32, 0.06, 1.6, 0.35), (gm, "semi-structured", 32, math.nan, math.nan, 0.5),
    ])  # fmt: skip
    f = rule(fd.inference_gain, metrics(*BASE), i=inf)
    assert f.text == (
        "The fastest pruned model, knowledge-aware (paper) at 90% (sparse), runs 1.8× faster than the dense teacher "
        "at batch 32 (accuracy 85.5, teacher 90.0); it takes 35.0% of the teacher's size on disk."
    )
    assert f.numbers == pytest.approx({"speedup": 1.8, "sparsity": 0.9, "batch_size": 32.0, "score": 0.855,
                                       "teacher": 0.9, "size_ratio": 0.35})  # fmt: skip
    assert f.page == fd.INFERENCE_PAGE


def test_inference_gain_says_when_pruning_buys_no_speed():
    ka = _unit("pruned", KA, 0.9, 1, math.nan)
    f = rule(fd.inference_gain, metrics(*BASE), i=inference([(ka, "sparse", 16, 0.2, 0.5, math.nan)]))
    assert f.text == (
        "Pruning buys no speed here: the fastest pruned model, knowledge-aware (paper) at 90% (sparse), runs at "
        "0.5× the dense teacher's speed at batch 16 (accuracy 85.5, teacher 90.0)."
    )
    assert rule(fd.inference_gain, metrics(*BASE)) is None
    assert rule(fd.inference_gain, metrics(*BASE), i=inference([("finetuned", "dense", 32, 0.1, 1.0, 1.0)])) is None


# ----- findings() and the table ------------------------------------------------------------------------------


def test_findings_on_empty_and_partial_inputs():
    assert fd.findings(pd.DataFrame()) == []
    assert fd.findings(pd.DataFrame(columns=METRIC_COLUMNS), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()) == []
    m = metrics(*BASE)
    only = [f.rule for f in fd.findings(m)]
    assert only == ["score_kept", "method_ordering"]
    empty = [f.rule for f in fd.findings(m, pd.DataFrame(), pd.DataFrame(columns=["unit"]), pd.DataFrame())]
    assert empty == only
    assert [f.rule for f in fd.findings(metrics(("finetuned", 0.0, 0.9)), None, predictions())] == []


def test_findings_order_table_and_untouched_inputs():
    m, p = metrics(*BASE, (OS, 0.9, 0.70)), predictions()
    k = knowledge(knowledge_rows(KA, 0.9, "linear_cka", [0.9, 0.5]))
    before = (m.copy(), k.copy(), p.copy())
    found = fd.findings(m, k, p)
    assert [f.rule for f in found] == ["score_kept", "method_ordering", "constant_floor", "representations_part"]
    assert [f.order for f in found] == sorted(f.order for f in found)
    for a, b in zip((m, k, p), before):
        pd.testing.assert_frame_equal(a, b)
    table = fd.findings_table(found)
    assert list(table.columns) == ["rule", "severity", "text", "page", "numbers"]
    assert [json.loads(x) for x in table["numbers"]] == [f.numbers for f in found]
    assert fd.findings_table([]).empty


def test_a_finding_needs_finite_numbers():
    with pytest.raises(ValueError, match="finite number"):
        fd.Finding("r", "no numbers", {}, fd.SCORE_PAGE)
    with pytest.raises(ValueError, match="finite number"):
        fd.Finding("r", "NaN", {"x": math.nan}, fd.SCORE_PAGE)
    assert [fd.fmt(0.87959, "score"), fd.fmt(0.98459, "ratio"), fd.fmt(0.934, "corr"), fd.fmt(0.95, "sparsity")] == [
        "88.0", "98.5%", "0.93", "95%"]  # fmt: skip


# ----- the shipped showcase run -----------------------------------------------------------------------------


@pytest.mark.skipif(not (RUNS / "showcase-sst2").is_dir(), reason="showcase run not shipped")
def test_showcase_numbers_match_its_tables():
    from kaviz.analysis.analyzer import knowledge_table
    from kaviz.core.config import main_budget
    from kaviz.store import RunStore

    run = RunStore(str(RUNS)).open_run("showcase-sst2")
    m, k, p = run.metrics(), knowledge_table(run), run.unit_table("predictions")
    found = {f.rule: f for f in fd.findings(m, k, p, run.unit_table("inference"), main_budget=main_budget(run.config))}
    assert len(found) >= 3 and all(f.text and f.numbers for f in found.values())

    score = m[m["metric"] == "score"].set_index("unit")["value"]
    teacher = score["finetuned"]
    kept = found["score_kept"].numbers
    assert kept["teacher"] == pytest.approx(teacher)
    at = f"_s{kept['sparsity']:g}_"  # the highest sparsity every method reached
    assert sum(at in u for u in score.index) >= 2
    by_method: dict[str, list[float]] = {}
    for unit, value in score.items():
        if unit.startswith("pruned_") and at in unit and m.loc[m["unit"] == unit, "budget"].iloc[0] == 2.0:
            by_method.setdefault(m.loc[m["unit"] == unit, "method"].iloc[0], []).append(value)
    for method, values in by_method.items():  # the mean over seeds (two at 95% since seed 43 finished)
        assert kept[f"kept:{method}"] == pytest.approx(np.mean(values) / teacher)

    labels = p[p["unit"] == "finetuned"]["label"].to_numpy()
    majority = max(np.mean(labels == c) for c in np.unique(labels))
    assert found["constant_floor"].numbers["constant"] == pytest.approx(majority)

    focus = "knowledge-aware" if (m["method"] == "knowledge-aware").any() else None
    if "representations_part" in found and focus:
        rows = k[(k["metric"] == "linear_cka") & (k["reference"] == "finetuned") & (k["method"] == focus)]
        rows = rows[(rows["head"] == -1) & (rows["layer"] >= 0)]
        n = found["representations_part"].numbers
        at_sparsity = rows[np.isclose(rows["sparsity"].astype(float), n["sparsity"]) & (rows["budget"] == 2.0)]
        per_layer = at_sparsity.groupby("layer")["value"].mean()  # the mean over seeds, per layer
        assert np.isclose(per_layer, n.get("lowest", n.get("at"))).any()
    if "general_knowledge" in found:
        g = k[k["metric"].str.startswith("general_") & (k["layer"] == -1)].set_index("unit")["value"]
        assert found["general_knowledge"].numbers["finetuned"] == pytest.approx(g["finetuned"])


def test_ordering_does_not_call_a_tie_evidence():
    """Every method at 50.0 (a demo run at 90%): the claim is not tested, not 'holds'."""
    rows = [dict(run="r", unit="finetuned", stage="finetuned", method="finetuned", sparsity=0.0, seed=42, budget=np.nan,
                 metric="score", value=0.9)]  # fmt: skip
    for m in ("knowledge-aware", "gradual-magnitude"):
        rows.append(dict(run="r", unit=f"pruned_{m}_s0.9_seed42", stage="pruned", method=m, sparsity=0.9, seed=42,
                         budget=np.nan, metric="score", value=0.5))  # fmt: skip
    found = {f.rule: f for f in fd.findings(pd.DataFrame(rows))}
    text = found["method_ordering"].text
    assert "is not tested in this run: at 90% 50.0 vs gradual magnitude 50.0 (a tie or the constant answer)" in text
    assert "holds" not in text

"""kaviz.views.plots_compare: figures comparing runs, checked trace by trace on known tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kaviz.core.registry import STAGE_COLORS
from kaviz.views import plots_compare as pc
from kaviz.views.plots import METHOD_COLORS


def curves() -> pd.DataFrame:
    rows = []
    for run, teacher in (("A", 0.9), ("B", 0.8)):
        rows.append(
            dict(run=run, stage="finetuned", method="finetuned", sparsity=0.0, measured_sparsity=0.0, mean=teacher)
        )
        for method, drop in (("oneshot-magnitude", 0.4), ("small-dense", 0.2)):
            for s in (0.5, 0.9):
                rows.append(
                    dict(
                        run=run,
                        stage="pruned",
                        method=method,
                        sparsity=s,
                        measured_sparsity=s - 0.01,
                        mean=teacher - drop * s,
                    )
                )
    df = pd.DataFrame(rows)
    return df.assign(lo=df["mean"], hi=df["mean"], n_seeds=1)


def by_name(fig):
    return {t.name: t for t in fig.data}


def test_accuracy_compare():
    table = curves()
    before = table.copy()
    fig = pc.accuracy_compare(table, "score")
    pd.testing.assert_frame_equal(table, before)
    t = by_name(fig)
    assert set(t) == {f"{m} · {r}" for m in ("oneshot-magnitude", "small-dense") for r in "AB"} | {
        "fine-tuned teacher · A",
        "fine-tuned teacher · B",
    }
    a, b = t["oneshot-magnitude · A"], t["oneshot-magnitude · B"]
    assert list(a.x) == pytest.approx([0.49, 0.89]) and list(a.y) == pytest.approx([0.7, 0.54])
    assert a.line.color == b.line.color == METHOD_COLORS["oneshot-magnitude"]
    assert (a.line.dash, a.marker.symbol) == ("solid", "circle") and (b.line.dash, b.marker.symbol) == (
        "dash",
        "square",
    )
    assert t["small-dense · A"].mode == "markers" and a.mode == "lines+markers"
    teacher = t["fine-tuned teacher · B"]
    assert (
        list(teacher.y) == [0.8, 0.8]
        and teacher.line.dash == "dash"
        and teacher.line.color == STAGE_COLORS["finetuned"]
    )
    assert list(by_name(pc.accuracy_compare(table, x="target"))["oneshot-magnitude · A"].x) == [0.5, 0.9]
    assert fig.layout.yaxis.title.text == "score"
    with pytest.raises(ValueError, match="x 'y'"):
        pc.accuracy_compare(table, x="y")
    with pytest.raises(ValueError, match="lacks columns"):
        pc.accuracy_compare(table.drop(columns="run"))


def test_knowledge_compare():
    rows = [
        dict(run=r, method=m, layer=i, value=1 - 0.1 * i - (0.05 if r == "B" else 0))
        for r in "AB"
        for m in ("knowledge-aware", "oneshot-magnitude")
        for i in (2, 0, 1)
    ]
    fig = pc.knowledge_compare(pd.DataFrame(rows), "linear_cka", "finetuned")
    t = by_name(fig)
    assert len(t) == 4
    kb = t["knowledge-aware · B"]
    assert list(kb.x) == [0, 1, 2] and list(kb.y) == pytest.approx([0.95, 0.85, 0.75])
    assert kb.line.dash == "dash" and kb.line.color == METHOD_COLORS["knowledge-aware"]
    assert fig.layout.yaxis.title.text == "linear_cka vs finetuned"


def test_difference_heatmap():
    diff = pd.DataFrame({"method": ["m2", "m2", "m1"], "sparsity": [0.9, 0.5, 0.5], "difference": [-0.2, 0.1, 0.05]})
    fig = pc.difference_heatmap(diff, ("A", "B"))
    h = fig.data[0]
    assert list(h.y) == ["m2", "m1"] and list(h.x) == ["50%", "90%"]
    z = np.asarray(h.z, dtype=float)
    assert z[0].tolist() == pytest.approx([0.1, -0.2]) and z[1, 0] == pytest.approx(0.05) and math.isnan(z[1, 1])
    assert (h.zmid, h.zmin, h.zmax) == (0.0, -0.2, 0.2)
    assert fig.layout.title.text == "score: A − B" and fig.layout.xaxis.type == "category"


def test_mask_overlap_heatmap():
    rows = [
        dict(layer=layer, role=r, jaccard=0.1 * layer + 0.01 * k)
        for layer in (1, 0)
        for k, r in enumerate(["ffn_out", "query"])
    ]
    rows.append(dict(layer=0, role="key", jaccard=float("nan")))
    h = pc.mask_overlap_heatmap(pd.DataFrame(rows), "t").data[0]
    assert list(h.x) == ["query", "key", "ffn_out"] and list(h.y) == ["layer 0", "layer 1"]
    z = np.asarray(h.z, dtype=float)
    assert z[1].tolist()[0] == pytest.approx(0.11) and z[1, 2] == pytest.approx(0.1) and math.isnan(z[0, 1])


def test_surviving_heads_heatmap():
    heads = pd.DataFrame(
        [
            dict(unit=u, layer=layer, head=h, nonzero=(h + layer) / 10 + (0.5 if u == "b" else 0))
            for u in "ab"
            for layer in range(2)
            for h in range(3)
        ]
    )
    fig = pc.surviving_heads_heatmap(heads, {"a": "run A", "b": "run B"})
    assert [t.name for t in fig.data] == ["run A", "run B"]
    assert [a.text for a in fig.layout.annotations] == ["run A", "run B"]
    assert np.asarray(fig.data[1].z, dtype=float) == pytest.approx(np.array([[0.5, 0.6, 0.7], [0.6, 0.7, 0.8]]))
    assert list(fig.data[0].x) == ["h0", "h1", "h2"]
    assert fig.data[0].showscale and not fig.data[1].showscale


def test_compare_modules_load_neither_streamlit_nor_torch():
    import subprocess
    import sys

    code = "import sys, kaviz.views.plots_compare, kaviz.analysis.compare, kaviz.launcher; print(sorted({'streamlit', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Figures (kaviz.views.plots) on small hand-made frames; the tables behind them are in test_ui_data.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kaviz.views import plots
from tests.helpers import metric_rows, sample_metrics  # noqa: F401


@pytest.fixture
def metrics() -> pd.DataFrame:
    return sample_metrics()


def by_name(fig):
    return {t.name: t for t in fig.data}


def test_method_colors_are_fixed_and_others_get_the_palette():
    assert plots.method_color("knowledge-aware") == plots.METHOD_COLORS["knowledge-aware"]
    a, b = plots.method_color("imp-a", ["imp-a", "imp-b"]), plots.method_color("imp-b", ["imp-a", "imp-b"])
    assert a != b and a not in plots.METHOD_COLORS.values()


# ----- stage diagram ------------------------------------------------------------------------------


def units_frame(statuses: dict[str, str]) -> pd.DataFrame:
    rows = []
    for unit, status in statuses.items():
        if unit in ("pretrained", "finetuned"):
            rows.append({"unit": unit, "stage": unit, "method": unit, "sparsity": 0.0, "seed": 1, "status": status})
        else:
            _, method, s, seed = unit.split("_")
            rows.append(
                {
                    "unit": unit,
                    "stage": "pruned",
                    "method": method,
                    "sparsity": float(s[1:]),
                    "seed": int(seed[4:]),
                    "status": status,
                }
            )
    return pd.DataFrame(rows)


def test_stage_diagram_boxes_by_status():
    units = units_frame(
        {
            "pretrained": "done",
            "finetuned": "done",
            "pruned_a_s0.5_seed1": "done",
            "pruned_a_s0.9_seed1": "done",
            "pruned_a_s0.9_seed2": "running",
            "pruned_b_s0.5_seed1": "failed",
            "pruned_b_s0.9_seed1": "pending",
        }
    )
    fig = plots.stage_diagram(units, {"finetuned": 90, "pruned_a_s0.5_seed1": 81.234})  # scores as shown, ×100
    t = by_name(fig)
    assert set(t) == {"done", "running", "failed", "pending", "labels"}
    # one closed rectangle (5 points + a gap) per box
    assert [len(t[s].x) // 6 for s in ("done", "running", "failed", "pending")] == [3, 1, 1, 1]
    assert t["done"].fillcolor.startswith("rgba(44,160,44")
    labels = dict(zip(t["labels"].text, zip(t["labels"].x, t["labels"].y)))
    assert labels["pre-trained<br>done"] == (0.0, -0.5)  # centred on the two method rows
    assert "fine-tuned<br>90.0" in labels
    assert "81.2" in labels  # a at 50%, row 0, first column
    assert labels["81.2"] == (3.0, 0.0)
    assert "1/2 seeds done" in labels  # a at 90%: one of two seeds done, one running
    hover = dict(zip(t["labels"].text, t["labels"].hovertext))
    assert hover["1/2 seeds done"] == "pruned_a_s0.9_seed1: done<br>pruned_a_s0.9_seed2: running"
    annotations = [a.text for a in fig.layout.annotations]
    assert {"fine-tune", "prune", "50%", "90%", "a", "b"} <= set(annotations)


def test_stage_diagram_before_any_student():
    fig = plots.stage_diagram(units_frame({"pretrained": "running", "finetuned": "pending"}))
    assert set(by_name(fig)) == {"running", "pending", "labels"}
    assert "prune" not in [a.text for a in fig.layout.annotations]


# ----- sparsity heatmap ---------------------------------------------------------------------------


BERT_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


@pytest.fixture
def sparsity_table() -> pd.DataFrame:
    """A BERT-like table (six roles; no ffn_gate): two units, two layers, known values."""
    rows = []
    for unit, base in (("u1", 0.5), ("u2", 0.9)):
        for layer in (1, 0):  # deliberately out of order
            for k, role in enumerate(reversed(BERT_ROLES)):
                rows.append(
                    {
                        "unit": unit,
                        "module": f"l{layer}.{role}",
                        "layer": layer,
                        "role": role,
                        "numel": 10,
                        "nonzero": 5,
                    }
                    | {"sparsity": base + 0.01 * layer + 0.001 * k}
                )
    return pd.DataFrame(rows)


def test_sparsity_heatmap_layer_by_role(sparsity_table):
    fig = plots.sparsity_heatmap(sparsity_table, "u2")
    hm = fig.data[0]
    assert list(hm.x) == list(BERT_ROLES)  # the roles present, in display order
    assert list(hm.y) == ["layer 0", "layer 1"]
    assert hm.z.shape == (2, 6)
    # role ffn_out was written first (k=0), query last (k=5)
    assert hm.z[0, 0] == pytest.approx(0.905) and hm.z[1, 5] == pytest.approx(0.91)
    assert (hm.zmin, hm.zmax) == (0.0, 1.0)
    assert fig.layout.yaxis.autorange == "reversed"
    assert "u2" in fig.layout.title.text


def test_sparsity_heatmap_places_a_gated_ffn_in_display_order():
    """A gated FFN (Llama: gate, up, down) adds the ffn_gate column between attn_out and ffn_in."""
    roles = ["ffn_out", "ffn_in", "ffn_gate", "attn_out", "value", "key", "query"]
    df = pd.DataFrame({"layer": 0, "role": roles, "sparsity": [0.1 * i for i in range(7)]})
    hm = plots.sparsity_heatmap(df).data[0]
    assert (
        list(hm.x) == list(plots.ROLE_ORDER) == ["query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out"]
    )
    assert hm.z[0, 4] == pytest.approx(0.2)  # ffn_gate


def test_sparsity_heatmap_needs_a_unit_when_several(sparsity_table):
    with pytest.raises(ValueError, match="2 units; pass unit= one of u1, u2"):
        plots.sparsity_heatmap(sparsity_table)
    with pytest.raises(ValueError, match="no sparsity rows for unit 'u3'"):
        plots.sparsity_heatmap(sparsity_table, "u3")
    one = sparsity_table[sparsity_table["unit"] == "u1"].drop(columns="unit")
    assert plots.sparsity_heatmap(one).data[0].z[0, 0] == pytest.approx(0.505)


# ----- loss curves --------------------------------------------------------------------------------


def test_loss_curves_one_line_per_unit_and_component():
    history = pd.DataFrame(
        {
            "unit": ["a", "a", "b", "b"],
            "step": [20.0, 10.0, 10.0, 20.0],
            "loss": [0.5, 1.0, 2.0, 1.5],
            "att": [0.1, 0.2, 0.3, 0.25],
        }
    )
    fig = plots.loss_curves(history)
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].x) == [10.0, 20.0] and list(fig.data[0].y) == [1.0, 0.5]  # sorted by step
    fig = plots.loss_curves(history, ["loss", "att", "hid"], log_y=True)
    assert [t.name for t in fig.data] == ["a · loss", "a · att", "b · loss", "b · att"]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert fig.layout.yaxis.type == "log"
    with_nan = history.assign(att=[np.nan, np.nan, 0.3, 0.25])
    assert [t.name for t in plots.loss_curves(with_nan, ["loss", "att"]).data] == ["a · loss", "b · loss", "b · att"]
    single = plots.loss_curves(history[history["unit"] == "a"], ["loss", "att"])
    assert [t.name for t in single.data] == ["loss", "att"]


def test_loss_curves_errors():
    with pytest.raises(ValueError, match="'step'"):
        plots.loss_curves(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="none of the components"):
        plots.loss_curves(pd.DataFrame({"step": [1.0], "loss": [1.0]}), ["hid"])


def test_plots_and_tables_load_neither_streamlit_nor_torch():
    code = (
        "import sys, kaviz.views.plots, kaviz.views.ui_data; print(sorted({'streamlit', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

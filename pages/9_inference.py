"""What pruning buys at inference: score against measured speedup and size, per unit and variant."""

import streamlit as st

from kaviz.views import plots_costs
from pages._common import figure, pick, read, require_run, run_metrics, run_unit_table

st.title("What pruning buys")
key = require_run()
inference = read(run_unit_table, *key, "inference")
if inference.empty:
    st.info(
        "No inference measurements in this run yet. `kaviz analyze RUN` measures every unit's latency, "
        "memory and size on this machine (`analysis.inference`)."
    )
    st.stop()
metrics = read(run_metrics, *key)
c = st.columns([2, 3], vertical_alignment="bottom")
sizes = sorted(int(b) for b in inference["batch_size"].unique())
batch = pick("Batch size", sizes, "costs_batch", container=c[0], index=len(sizes) - 1)
x = c[1].radio("x axis", list(plots_costs.X_TITLES), horizontal=True, key="costs_x",
               format_func={"speedup": "speedup", "size_ratio": "size on disk"}.get)  # fmt: skip
table = plots_costs.cost_table(metrics, inference, batch)
figure(plots_costs.score_vs_cost(table, x), table, f"{key[1]}_score_vs_{x}", "costs")
device = ", ".join(sorted(set(inference["device"].dropna().astype(str)))) or "?"
st.caption(
    f"Measured on {device} while the run was analysed: median of the timed forward passes of a batch of {batch}. "
    "dense = the pruned model as stored (zeros in dense matrices: no faster); sparse = CSR matrices where at least "
    "half the weights are zero (torch.sparse; on a CPU only high sparsity pays); shrunk = the structured unit's "
    "physically smaller model. A speedup below 1 is slower than the teacher and is drawn as such."
)
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "sparsity": st.column_config.NumberColumn("target sparsity", format="percent"),
        "median_s": st.column_config.NumberColumn("median s", format="%.4f"),
        "speedup": st.column_config.NumberColumn("speedup", format="%.2fx"),
        "size_ratio": st.column_config.NumberColumn("size / teacher", format="%.2f"),
    },
)

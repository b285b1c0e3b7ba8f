"""The run folder: the only place that knows the layout on disk (manifest, tables, checkpoints,
atomic writes). ``kaviz.store`` is its API: :class:`RunStore`, :class:`Run` and their errors."""

from kaviz.store.runs import (
    LIST_COLUMNS,
    METRIC_COLUMNS,
    SCHEMA_VERSION,
    STAGES,
    Run,
    RunExistsError,
    RunStore,
    StoreError,
    unit_id,
)

__all__ = [
    "LIST_COLUMNS",
    "METRIC_COLUMNS",
    "SCHEMA_VERSION",
    "STAGES",
    "Run",
    "RunExistsError",
    "RunStore",
    "StoreError",
    "unit_id",
]

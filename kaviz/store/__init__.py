"""The run folder: the only place that knows the layout on disk (manifest, tables, checkpoints,
atomic writes). ``kaviz.store`` is its API: :class:`RunStore`, :class:`Run` and their errors."""

from kaviz.core.schema import METRIC_COLUMNS
from kaviz.store.manifest import SCHEMA_VERSION, STAGES, StoreError, unit_id
from kaviz.store.run import Run, RunExistsError
from kaviz.store.runs import LIST_COLUMNS, RunStore

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

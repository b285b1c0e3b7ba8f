"""Tables and plotly figures built from a run's tables, for the app and reports; no I/O beyond the store API."""

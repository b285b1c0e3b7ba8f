"""From a run's units to tables: the analyser and the knowledge tables, run comparison, evidence with intervals."""

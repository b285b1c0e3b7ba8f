"""What a run executes: the context a unit gets, the method registry, the pipeline (one or several processes)."""

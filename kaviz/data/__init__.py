"""Tasks: GLUE (hub or local TSV), custom CSV/TSV/JSONL, the built-in demo task, STS pairs; encoding and metrics."""

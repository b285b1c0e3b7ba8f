"""Definitions every layer reads: the typed run config, safe names, architectures as data."""

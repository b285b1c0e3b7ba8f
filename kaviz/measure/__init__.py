"""Measurements on captured activations: capture, similarity (CKA, CCA, Procrustes), attention, probes, attribution."""

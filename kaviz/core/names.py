"""Names that become folders: run ids and unit ids. Kept apart so config and store agree."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, what: str = "run name") -> str:
    """Return ``name`` if it is a safe single path component, else raise ``ValueError``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{what} {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters, no '/' or '..')"
        )
    return name


#: Names of the representation-similarity registry (``kaviz.measure.similarity.METRICS``), listed here
#: so that a config is checked when it is built, without importing the measurement code
#: (tests/test_config.py keeps the two equal).
SIMILARITY_KINDS = (
    "linear_cka",
    "rbf_cka",
    "unbiased_cka",
    "minibatch_cka",
    "procrustes_similarity",
    "procrustes",
    "svcca",
    "pwcca",
)


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"N:M"`` -> (N, M): keep N weights in every group of M consecutive inputs of a row (2:4 is
    what sparse tensor cores run); None stays None. Raises ValueError on anything else."""
    if pattern is None:
        return None
    parts = str(pattern).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"pattern {pattern!r} is not 'N:M' (e.g. '2:4')")
    n, m = (int(p) for p in parts)
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r}: need 0 < N < M (N weights kept of every M)")
    return n, m

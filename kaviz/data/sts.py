"""STS-B-style sentence pairs for the general-knowledge probe: the local STS-B dev set when
given, else a deterministic generated set (paraphrases, shared subjects, unrelated pairs)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

from kaviz.data.base import TaskError

# ----- STS pairs: local STS-B, or generated ----------------------------------------------------------------


def sts_pairs(path: Path | str | None, n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[float]]:
    """Up to ``n`` (pair, gold score 0..5) STS-B-style examples.

    Read from a local GLUE STS-B ``dev.tsv`` (``path`` is the file, the STS-B folder or the GLUE
    folder holding ``STS-B/``), as a seeded sample kept in file order; TaskError when ``path`` is
    given but holds none. Without ``path``: a built-in set generated from templates (deterministic
    for ``seed``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer >= 3, got {n!r}")
    if path is None:
        return builtin_sts(n, seed)
    file = _stsb_file(Path(path))
    if file is None:
        raise TaskError(
            f"STS-B data not found at {path}: expected an STS-B dev.tsv, a folder holding it, or a GLUE "
            "folder with STS-B/dev.tsv (leave analysis.sts_path unset for the built-in generated pairs)"
        )
    with file.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0] if rows else []
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in header]
    if missing:
        raise ValueError(f"{file}: header lacks column(s) {missing}; expected an STS-B dev.tsv")
    i1, i2, isc = (header.index(c) for c in ("sentence1", "sentence2", "score"))
    data = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            continue  # ragged rows of the official file are skipped, as the GLUE loaders do
        try:
            score = float(row[isc])
        except ValueError as e:
            raise ValueError(f"{file}, line {line}: score {row[isc]!r} is not a number") from e
        data.append(((row[i1], row[i2]), score))
    if len(data) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
        data = [data[i] for i in keep]
    return [d[0] for d in data], [d[1] for d in data]


def check_sts_path(path: Path | str | None) -> None:
    """TaskError unless ``path`` is None or holds an STS-B dev.tsv (run before anything is written)."""
    if path is not None and _stsb_file(Path(path)) is None:
        raise TaskError(f"analysis.sts_path: no STS-B dev.tsv at {path} (the file, its folder, or a GLUE folder)")


def _stsb_file(path: Path) -> Path | None:
    for cand in (path, path / "dev.tsv", path / "STS-B" / "dev.tsv"):
        if cand.is_file():
            return cand
    return None


# Words for generated pairs; (word, paraphrase) so a sentence can be reworded without changing its meaning.
_SUBJECTS = [("man", "guy"), ("woman", "lady"), ("child", "kid"), ("dog", "puppy"), ("chef", "cook"),
             ("student", "pupil"), ("musician", "performer"), ("girl", "young girl")]  # fmt: skip
_ACTIVITIES = [
    ("playing the guitar", "strumming a guitar"), ("riding a bicycle", "cycling on a bike"),
    ("cutting an onion", "slicing an onion"), ("reading a book", "looking through a novel"),
    ("running along the beach", "jogging by the sea"), ("cooking some pasta", "preparing noodles"),
    ("painting a fence", "putting paint on a fence"), ("swimming in a pool", "doing laps in the water"),
    ("talking on the phone", "making a phone call"), ("eating an apple", "biting into an apple"),
]  # fmt: skip
_PLACES = [("in the park", "at the park"), ("in the kitchen", "inside the kitchen"), ("at home", "in the house"),
           ("near the river", "by the river"), ("on the street", "out on the road"), ("at night", "after dark")]  # fmt: skip
# relation -> (gold range, which parts change): 0 keep, 1 paraphrase, 2 replace
_RELATIONS: dict[str, tuple[tuple[float, float], tuple[int, int, int]]] = {
    "reworded": ((4.6, 5.0), (1, 0, 1)),
    "paraphrase": ((4.0, 4.6), (1, 1, 1)),
    "other_place": ((3.0, 3.6), (0, 0, 2)),
    "other_subject": ((2.2, 2.8), (2, 0, 0)),
    "other_activity": ((1.0, 1.6), (0, 2, 0)),
    "unrelated": ((0.0, 0.4), (2, 2, 2)),
}


def _sentence(subject: str, activity: str, place: str) -> str:
    article = "An" if subject[0] in "aeiou" else "A"
    return f"{article} {subject} is {activity} {place}."


def builtin_sts(n: int, seed: int) -> tuple[list[tuple[str, str]], list[float]]:
    """``n`` generated pairs cycling through :data:`_RELATIONS` (so gold scores spread over 0..5)."""
    rng = random.Random(seed)
    parts = (_SUBJECTS, _ACTIVITIES, _PLACES)
    pairs, gold = [], []
    for i in range(n):
        (lo, hi), change = list(_RELATIONS.values())[i % len(_RELATIONS)]
        picks = [rng.randrange(len(p)) for p in parts]
        first = [p[k][0] for p, k in zip(parts, picks)]
        second = []
        for p, k, how in zip(parts, picks, change):
            if how == 2:
                k = (k + rng.randrange(1, len(p))) % len(p)  # a different item
            second.append(p[k][1 if how == 1 else 0])
        pairs.append((_sentence(*first), _sentence(*second)))
        gold.append(round(rng.uniform(lo, hi), 2))
    return pairs, gold

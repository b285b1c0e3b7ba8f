"""The decoder probes' data files (kaviz.measure.lm_probes): a completion JSONL and an LM corpus.

- :func:`read_completion_file`: ``{"prompt": ..., "answer": ...}`` lines, refused with the line
  number on missing keys, empty answers or non-UTF-8 text;
- :func:`read_corpus`: one held-out passage per line of a UTF-8 text file.
"""

from __future__ import annotations

import json
from pathlib import Path

from kaviz.core.errors import KavizError


class ProbeFileError(KavizError, ValueError):
    """A completion-probe file that cannot be used; the message names the file and line."""


def read_completion_file(path: str | Path) -> list[dict[str, str]]:
    """The ``{"prompt", "answer"}`` pairs of a JSONL file (blank lines skipped)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProbeFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    pairs = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProbeFileError(f"{path}, line {n}: not UTF-8 text") from None
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProbeFileError(f"{path}, line {n}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict):
            raise ProbeFileError(f"{path}, line {n}: expected a JSON object with 'prompt' and 'answer'")
        missing = [k for k in ("prompt", "answer") if k not in item]
        if missing:
            raise ProbeFileError(f"{path}, line {n}: missing {', '.join(repr(k) for k in missing)}")
        if not all(isinstance(item[k], str) for k in ("prompt", "answer")):
            raise ProbeFileError(f"{path}, line {n}: 'prompt' and 'answer' must be strings")
        if not item["answer"].strip():
            raise ProbeFileError(f"{path}, line {n}: the answer is empty")
        pairs.append({"prompt": item["prompt"], "answer": item["answer"]})
    if not pairs:
        raise ProbeFileError(f"{path}: no prompt/answer pairs")
    return pairs


def read_corpus(path: str | Path, limit: int = 256) -> list[str]:
    """Up to ``limit`` non-empty lines of a UTF-8 text file: the held-out texts of the LM probe."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ProbeFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ProbeFileError(f"{path}, line {line}: not UTF-8 text") from None
    lines = [t.strip() for t in text.splitlines() if t.strip()][:limit]
    if not lines:
        raise ProbeFileError(f"{path}: no text (the LM probe needs one passage per line)")
    return lines

"""A typed dataclass from a plain dict (YAML/JSON), with type checks and did-you-mean for unknown
keys; and the (field, help, default) rows of a config class. Used by :mod:`kaviz.core.config`."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from kaviz.core.errors import ConfigError

SCI_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def field_message(problem: str) -> tuple[str, str]:
    """'field: message' -> (field, message); a problem without a field name -> ('', problem)."""
    field_, sep, message = problem.partition(": ")
    if sep and " " not in field_.strip() and field_:
        return field_, message
    return "", problem


# ----- generic dataclass <- dict with type checks ------------------------------------------------


def build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        msgs = []
        for k in unknown:
            hint = difflib.get_close_matches(str(k), fields, n=1)
            msgs.append(
                f"{prefix}{k}: unknown key"
                + (f" (did you mean {prefix}{hint[0]!r}?)" if hint else "")
                + f"; known: {', '.join(fields)}"
            )
        raise ConfigError(problems=[field_message(x) for x in msgs])
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = get_args(tp)
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and SCI_FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, int) and not isinstance(value, bool) and where.endswith("pattern"):
                hint = ' (YAML reads an unquoted N:M such as 2:4 as a base-60 number: quote it, "2:4")'
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}{hint}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def help_rows(cls: type, prefix: str):
    for f in dataclasses.fields(cls):
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from help_rows(hints[f.name], f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            yield f"{prefix}{f.name}", f.metadata.get("help", ""), default

"""The typed fields of a recipe's tables: ``_f`` declares a field's default, limits, choices and doc;
``build_table`` checks a TOML table against a dataclass's type hints into an instance, every error one line
naming the file and the key (with a "did you mean" for a misspelt key or choice)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import field
from typing import Any

from vitkit.errors import UserError

Spec = str | dict  # a component: "name" or { name = "name", ...kwargs }
EpochSizes = list[list[int]]  # [[epoch, img_size], ...]: from that epoch on, train at that size


def _f(
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    above: bool = False,
    doc: str = "",
) -> Any:
    meta = {"min": min, "max": max, "choices": choices, "above": above, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def build_table(cls: type, table: Any, where: str, prefix: str) -> Any:
    """``table`` checked against ``cls``'s fields and type hints (nested dataclasses recursively)."""
    label = f"[{prefix.rstrip('.')}]" if prefix else "top level"
    if not isinstance(table, dict):
        raise UserError(f"{where}: {prefix.rstrip('.')}: expected a table, got {_show(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(fields)}"
            raise UserError(f"{where}: unknown key '{prefix}{key}' in {label}{hint}")
    values = {}
    for name, f in fields.items():
        if name not in table:
            continue
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build_table(hint, table[name], where, f"{key}.")
        else:
            values[name] = _check(table[name], hint, f.metadata, where, key)
    return cls(**values)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check(value: Any, hint: Any, meta: dict[str, Any], where: str, key: str) -> Any:
    def fail(expected: str) -> typing.NoReturn:
        raise UserError(f"{where}: {key}: expected {expected}, got {_show(value)}")

    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail("a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            fail("a string")
    elif hint == bool | str:  # on, off or "auto"
        if value != "auto" and not isinstance(value, bool):
            fail('true, false or "auto"')
    elif hint == int | str:  # a count or "auto"
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            fail('an integer or "auto"')
    elif hint == str | list:  # a path pattern or a list of them
        if not isinstance(value, (str, list)) or isinstance(value, list) and not all(isinstance(v, str) for v in value):
            fail("a string or a list of strings")
    elif hint == EpochSizes:
        pairs = isinstance(value, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(type(n) is int and n >= 1 for n in pair) for pair in value
        )
        if not pairs:
            fail("a list of [epoch, img_size] pairs of positive integers, e.g. [[1, 16], [5, 24]]")
        return value
    elif hint is list:
        if not isinstance(value, list):
            fail("a list")
        for item in value:
            if not isinstance(item, (str, dict)) or (isinstance(item, dict) and "name" not in item):
                raise UserError(f"{where}: {key}: each entry is a name or a table with 'name', got {_show(item)}")
    elif hint is dict:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            fail("a name or a table with a 'name' key")
    elif hint == Spec and not (
        isinstance(value, str) or isinstance(value, dict) and isinstance(value.get("name"), str)
    ):
        fail("a name or a table with a 'name' key")
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        fail(f"one of {', '.join(map(repr, choices))}{hint_text}")
    if lo is not None and (value <= lo if meta.get("above") else value < lo):
        fail(f"a value {'>' if meta.get('above') else '>='} {lo}")
    if hi is not None and value > hi:
        fail(f"a value <= {hi}")
    return value

"""The search space of ``vitkit tune``: ``KEY=loguniform(a,b)``, ``uniform(a,b)``, ``int(a,b)``,
``choice(x,y,...)`` entries, parsed and checked against the recipe before any trial runs. No torch, no optuna
import at module level."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import tomllib

from vitkit.errors import UserError
from vitkit.recipe import Recipe, apply_overrides, recipe_from_dict

KINDS = ("loguniform", "uniform", "int", "choice")
_ENTRY = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Param:
    """One searched recipe key: its distribution and bounds (or choices)."""

    key: str
    kind: str  # loguniform | uniform | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        """The entry as the command line writes it."""
        if self.kind == "choice":
            return f"{self.key}=choice({','.join(_show(c) for c in self.choices)})"
        return f"{self.key}={self.kind}({self.low:g},{self.high:g})"

    def suggest(self, trial: Any) -> Any:
        """This key's value for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def largest(self) -> Any:
        """The largest value the space can draw (``high``, a whole number for ``int``; the largest choice)."""
        if self.kind == "choice":
            return max(self.choices)
        return int(self.high) if self.kind == "int" else self.high

    def example(self) -> Any:
        """A value inside the space (to check the key against the recipe before trials run)."""
        if self.kind == "choice":
            return self.choices[0]
        return int(self.low) if self.kind == "int" else self.low


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _value(raw: str) -> Any:
    """A choice: TOML (numbers, true/false, quoted strings), else the bare text."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip("'\"")


def parse_param(text: str) -> Param:
    """One ``KEY=kind(args)`` entry; a malformed one is a ``UserError`` that names it."""
    match = _ENTRY.match(text)
    usage = "expected KEY=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,...)"
    if not match:
        raise UserError(f"--space {text!r}: {usage}, e.g. optimizer.lr=loguniform(1e-4,3e-3)")
    key, kind, args = match.group(1), match.group(2), [a for a in match.group(3).split(",") if a.strip()]
    if kind not in KINDS:
        raise UserError(f"--space {text!r}: unknown distribution {kind!r}; {usage}")
    if kind == "choice":
        if len(args) < 2:
            raise UserError(f"--space {text!r}: choice needs at least two values")
        choices = tuple(_value(a) for a in args)
        if any(isinstance(c, (list, dict)) for c in choices):
            raise UserError(f"--space {text!r}: choices are numbers, true/false or names")
        return Param(key, kind, choices=choices)
    if len(args) != 2:
        raise UserError(f"--space {text!r}: {kind} takes two bounds, low and high")
    try:
        low, high = (float(a) for a in args)
    except ValueError:
        raise UserError(f"--space {text!r}: the bounds must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UserError(f"--space {text!r}: expected finite bounds with low < high")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"--space {text!r}: loguniform bounds must be > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise UserError(f"--space {text!r}: int bounds must be whole numbers")
    return Param(key, kind, low, high)


def parse_space(entries: list[str], base: list[str] = ()) -> list[Param]:
    """``base`` (a recipe's ``tune.space``) with ``entries`` (``--space``) added; a key given again replaces it."""
    params: dict[str, Param] = {}
    for text in [*base, *entries]:
        param = parse_param(text)
        params[param.key] = param
    return list(params.values())


def with_values(recipe: Recipe, values: dict[str, Any], extra: list[str] = ()) -> Recipe:
    """``recipe`` with each searched key set to its value (and ``extra`` overrides), validated."""
    overrides = [f"{key}={toml_value(value)}" for key, value in values.items()] + list(extra)
    return recipe_from_dict(apply_overrides(recipe.to_dict(), overrides), source=recipe.source)


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def check_space(recipe: Recipe, params: list[Param]) -> None:
    """Every searched key must make a valid recipe at a value of its range (recipe errors name the key)."""
    if not params:
        raise UserError(
            "vitkit tune: nothing to search: give --space KEY=loguniform(a,b)|uniform(a,b)|int(a,b)|choice(x,y) "
            "or a [tune] space in the recipe"
        )
    for param in params:
        if param.key.split(".")[0] in ("tune", "output", "name"):
            raise UserError(f"--space {param.text()!r}: {param.key} is not a training setting")
        if param.key in ("data.fold", "data.split_file"):
            raise UserError(f"--space {param.text()!r}: the splits are fixed for a study (use --folds K)")
        for value in param.choices or (param.example(), param.largest()):
            try:
                with_values(recipe, {param.key: value})
            except UserError as err:
                raise UserError(f"--space {param.text()!r}: {err}") from None

"""What a comparison is made of, shared by the ``compare`` command, its ``jobs`` and its ``report``: the
variants and their repeats (seeds or folds), the ``--set`` keys of each run, the metrics it ranks
by (validation by default; never test), and the verdict lines (paired t-test over matched repeats,
``vitkit.stats``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitkit.errors import UserError
from vitkit.recipe import parse_override

#: accuracy metric -> the split it is measured on (its image count is summary.json's split_sizes[split])
ACCURACIES = {"best_val_acc": "val", "test_acc": "test"}

#: every metric of a comparison row -> True when higher is better
METRICS = {
    "best_val_acc": True,
    "test_acc": True,
    "train_img_per_s": True,
    "infer_img_per_s": True,
    "params": False,
    "gflops": False,
    "gmacs": False,
    "wall_time_s": False,
}

#: variants are ranked on validation; test accuracy is shown beside it and never picks the winner
RANK_DEFAULT = "best_val_acc"
RANK_METRICS = [metric for metric in METRICS if metric != "test_acc"]


def check_rank_metric(metric: str) -> None:
    """Refuse a ``--rank-by`` that is unknown, or the test split (choosing a winner on test is selection on test)."""
    if metric == "test_acc":
        raise UserError(
            "--rank-by test_acc: choosing the winner on the test split is selection on test; variants are "
            "ranked on validation (best_val_acc, the default) and test accuracy is shown beside it"
        )
    if metric not in METRICS:
        raise UserError(f"--rank-by {metric!r}: expected one of {', '.join(RANK_METRICS)}")


@dataclass
class Repeat:
    """One run of a variant: a seed or a fold (``tag``), the keys it sets, and its run directory once trained."""

    tag: str = ""
    overrides: list[str] = field(default_factory=list)
    run_dir: Path | None = None


@dataclass
class Variant:
    """One entry of a comparison: a recipe to train (with its ``--vary`` values) or a finished run.

    ``repeats`` are its runs: one by default, N seeds (``--seeds``) or K folds (``--folds``), the
    same for every variant so that repeat i of two variants is a matched pair."""

    label: str
    source: Path
    overrides: list[str]
    run_dir: Path | None = None
    repeats: list[Repeat] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.repeats:
            self.repeats = [Repeat(run_dir=self.run_dir)]


def split_values(text: str) -> list[str]:
    """``"a,{x=1, y=2},[3,4]"`` -> ``["a", "{x=1, y=2}", "[3,4]"]``: commas split only outside brackets/quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def parse_vary(texts: list[str]) -> list[tuple[str, list[str]]]:
    """``--vary key=v1,v2`` options -> ``[(key, [v1, v2]), ...]``; values stay TOML text."""
    axes = []
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise UserError(f"--vary {text!r}: expected KEY.PATH=V1,V2,..., e.g. --vary model.attention=softmax,linear")
        parse_override(f"{key}={split_values(values)[0]}")  # checks the key path
        axes.append((key.strip(), split_values(values)))
    if len({key for key, _ in axes}) < len(axes):
        raise UserError("--vary: each key may be varied once (give all its values after one =)")
    return axes


def plan(sources: list[str], vary: list[str]) -> list[Variant]:
    """Recipes x cartesian product of the ``--vary`` axes, plus finished run directories as they are."""
    axes = parse_vary(vary)
    recipes = [Path(s) for s in sources if not Path(s).is_dir()]
    variants = []
    for source in map(Path, sources):
        if source.is_dir():
            if not (source / "summary.json").is_file():
                raise UserError(f"{source}: not a finished run directory (no summary.json)")
            variants.append(Variant(source.parent.name, source, [], run_dir=source))
            continue
        if source.suffix != ".toml" and not source.is_file():
            raise UserError(f"{source}: neither a recipe file nor a run directory")
        combos = itertools.product(*[[(key, value) for value in values] for key, values in axes])
        for combo in combos:
            label = ", ".join(f"{key.split('.')[-1]}={value}" for key, value in combo)
            if len(recipes) > 1 or not label:
                label = f"{source.stem} [{label}]" if label else source.stem
            variants.append(Variant(label, source, [f"{key}={value}" for key, value in combo]))
    if axes and not recipes:
        raise UserError("--vary changes recipes; no recipe file was given (only run directories)")
    return variants


def run_name(label: str) -> str:
    """A folder-safe name for a variant's runs."""
    plain = re.sub(r"[{}\"']", "", label)
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", plain).strip("_") or "variant"


def add_repeats(variants: list[Variant], seeds: int | None, folds: int | None, first_seed: int) -> None:
    """Give every recipe variant the same repeats: seeds ``first_seed..+N-1``, or folds ``1/K..K/K``."""
    if seeds is not None and folds is not None:
        raise UserError("--seeds and --folds: choose one (each repeat is a seed, or a fold)")
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: expected a positive number of seeds")
    if folds is not None and folds < 2:
        raise UserError(f"--folds {folds}: expected K >= 2 folds")
    for variant in variants:
        if variant.run_dir is not None or (seeds is None and folds is None):
            continue
        if any(o.split("=")[0].strip() in ("seed", "data.fold") for o in variant.overrides):
            raise UserError(f"--vary sets the seed or fold of {variant.label!r}; --seeds/--folds repeat it already")
        if seeds is not None:
            variant.repeats = [Repeat(f"seed={s}", [f"seed={s}"]) for s in range(first_seed, first_seed + seeds)]
        else:
            variant.repeats = [Repeat(f"fold={k}/{folds}", [f'data.fold="{k}/{folds}"']) for k in range(1, folds + 1)]


def repeat_name(variant: Variant, repeat: Repeat) -> str:
    """The run folder name of one repeat: the variant's, plus ``-seed0`` or ``-fold1of5``."""
    suffix = repeat.tag.replace("=", "").replace("/", "of")
    return run_name(variant.label) + (f"-{suffix}" if suffix else "")


def run_overrides(variant: Variant, repeat: Repeat, overrides: list[str], out_dir: Path) -> list[str]:
    """Every ``--set`` of one run: the command's, the variant's, the repeat's, then where it goes."""
    extra = [f'output.dir="{out_dir.as_posix()}"', f'name="{repeat_name(variant, repeat)}"']
    return [*overrides, *variant.overrides, *repeat.overrides, *extra]


def rank(rows: list[dict[str, Any]], metric: str = RANK_DEFAULT) -> list[dict[str, Any]]:
    """Rows best first by ``metric`` (the mean over repeats), each with its ``rank``."""
    higher = METRICS[metric]
    ordered = sorted(rows, key=lambda r: -r[metric] if higher else r[metric])
    return [{"rank": i, **row} for i, row in enumerate(ordered, start=1)]


def verdicts(rows: list[dict[str, Any]], metric: str = RANK_DEFAULT, repeats: str = "seeds") -> list[str]:
    """The best variant against each other one over matched repeats (paired t-test on ``metric``), one
    line each; the test accuracies follow, for information (they do not enter the verdict)."""
    from vitkit.stats import verdict

    best, lines = rows[0], []
    for other in rows[1:]:
        a = [run[metric] for run in best["runs"]]
        b = [run[metric] for run in other["runs"]]
        if len(a) != len(b):
            line = f"{best['name']} vs {other['name']}: {len(a)} and {len(b)} runs cannot be paired"
        elif METRICS[metric]:
            line = verdict(best["name"], other["name"], a, b, metric in ACCURACIES, repeats)
        else:  # lower is better: test the other's excess
            line = verdict(best["name"], other["name"], b, a, False, repeats).replace("beats", "undercuts")
        lines.append(f"{metric}: {line}; test acc {best['test_acc']:.4f} vs {other['test_acc']:.4f} (not ranked on)")
    return lines

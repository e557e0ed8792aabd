"""``vitkit audit DIR_OR_RECIPE_OR_RUN``: duplicates and leaks, likely label errors and the facts of a folder,
read through the one data path (``load_dataset``: a run's ``split.json``, folds, ``data.exclude``), so the
splits reported are the ones a run trains and tests on (``vitkit.audit.fast``: the part every run does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitkit.commands import Command
from vitkit.commands.common import add_overrides
from vitkit.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from vitkit.runs.finished import FinishedRun

WEAK_FEATURES = 0.8  # out-of-fold accuracy under which pixel features are said to be too weak to judge labels


def resolve(target: str, overrides: list[str]) -> tuple[Any, FinishedRun | None]:
    """The recipe to audit and the run (``None`` unless ``target`` is a run directory, opened once:
    its recipe, split.json and model), a folder of images (the recipe ``vitkit run DIR`` would choose) or
    a recipe."""
    from vitkit.recipe import load_recipe
    from vitkit.runs.finished import open_run
    from vitkit.runs.layout import is_run_dir

    path = Path(target)
    if is_run_dir(path):
        run = open_run(path)
        return run.recipe(overrides=overrides), run
    if path.is_dir():
        from vitkit.commands.run.folder import folder_recipe

        return folder_recipe(path, overrides)[0], None
    if not path.is_file():
        raise UserError(f"vitkit audit: {target} is not a folder of images, a recipe or a run directory")
    return load_recipe(path, overrides), None


def _run_features(run: FinishedRun, data: Any) -> np.ndarray:
    from vitkit.audit.labels import model_features
    from vitkit.audit.source import base_batches

    return model_features(run.model, run.data, base_batches(data))


def check_labels(
    items: list[Any], data: Any, folds: int, run: FinishedRun | None, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(likely label errors, how they were found) over all splits."""
    import numpy as np

    from vitkit.audit.labels import folds_for, label_issues, out_of_fold_probs, pixel_features
    from vitkit.audit.source import base_batches

    if data.multi_label:
        return [], {"skipped": "multi-label data: the label check (confident learning) reads one label per image"}
    labels = np.array([item.label for item in items])
    usable = folds_for(labels, folds)
    if usable < 2:
        return [], {"skipped": "a class has fewer than 2 images"}
    if run is not None:
        features, source = _run_features(run, data), "the run's model embeddings"
    else:
        features, source = pixel_features(base_batches(data)), "16x16 pixels"
    probs = out_of_fold_probs(features, labels, usable, seed)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    how = (
        f"{source}, {usable}-fold logistic regression (out-of-fold accuracy {accuracy:.3f}), cleanlab find_label_issues"
    )
    if accuracy < WEAK_FEATURES and run is None:
        how += "; these features separate the classes poorly: audit a trained run (vitkit audit RUN) instead"
    check = {"how": how, "features": source, "folds": usable, "out_of_fold_accuracy": round(accuracy, 4)}
    return label_issues(items, data.classes, probs, labels), check


def audit(
    target: str,
    overrides: list[str] | None = None,
    labels: bool = True,
    folds: int = 5,
    threshold: int | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Any], Path | None, Any]:
    """The audit of ``target`` as ``audit.json`` holds it, with the run directory and the recipe
    (``threshold``: near copies' pHash bits that may differ, default ``NEAR_THRESHOLD``)."""
    from vitkit.audit.duplicates import NEAR_THRESHOLD, duplicate_groups
    from vitkit.audit.facts import balance, class_counts, image_facts, read_facts
    from vitkit.audit.fast import leak_counts, read_signatures, settings
    from vitkit.audit.labels import need_cleanlab
    from vitkit.audit.source import items_of
    from vitkit.engine.build import load_dataset, model_img_size, preprocessing

    threshold = NEAR_THRESHOLD if threshold is None else threshold

    if labels:
        need_cleanlab()  # before any image is read
    recipe, run = resolve(target, overrides or [])
    if run is not None:  # the files of its split.json, at its input size and preprocessing
        data = run.load_data(device="cpu", overrides=overrides or [])
    else:
        data = load_dataset(recipe, model_img_size(recipe), device="cpu", view=preprocessing(recipe))
    items = items_of(data)
    facts = read_facts(items, workers if workers is not None else max(1, recipe.data.num_workers))
    sig = read_signatures(data, digests=False)[1]
    groups = duplicate_groups(items, data.classes, [f.digest for f in facts], sig, threshold)
    counts = class_counts(items, data.classes)
    issues, check = check_labels(items, data, folds, run, recipe.seed) if labels else ([], {"skipped": "--no-labels"})
    record = data.split_record
    result = {
        "source": str(target),
        "root": str(record["root"]),
        "layout": record["layout"],
        "fold": record.get("fold", ""),
        "split_sizes": {name: len(record[name]) for name in ("train", "val", "test")},
        "classes": counts,
        "balance": balance(counts),
        "images": image_facts(facts),
        "unreadable": len(data.bad_images),
        "unreadable_files": list(data.bad_images),
        "duplicates": groups,
        "leaks": leak_counts(groups),
        "label_issues": issues,
        "label_check": check,
        "settings": {**settings(threshold, "same decoded pixels (blake2b of mode, size and pixels)"), "folds": folds},
    }
    return result, run.run_dir if run is not None else None, recipe


def audit_command(args: Any) -> int:
    """``vitkit audit``: audit, write audit.json and audit.html (and the fix plan), print the summary."""
    from vitkit.audit.duplicates import NEAR_THRESHOLD
    from vitkit.audit.report import print_summary, write_fix_plan, write_html, write_json

    start = time.perf_counter()
    threshold = NEAR_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= threshold <= 64:
        raise UserError(f"vitkit audit: --threshold {args.threshold}: expected 0-64 bits")
    result, run_dir, recipe = audit(
        args.target, args.overrides, not args.no_labels, args.folds, threshold, args.workers
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    elif run_dir is not None:
        out = run_dir / "audit"
        out.mkdir(exist_ok=True)
    else:
        from vitkit.runs.layout import new_run_dir

        out = new_run_dir(recipe, prefix="audit-")  # under output.dir, marked: never read as images
    result["wall_time_s"] = round(time.perf_counter() - start, 2)
    written = [write_json(result, out / "audit.json"), write_html(result, out / "audit.html")]
    if args.fix_plan:
        plan = write_fix_plan(result, Path(args.fix_plan))
        written.append(plan)
    print_summary(result, written)
    if args.fix_plan:
        print(f'edit it, then: vitkit run ... --set data.exclude="{Path(args.fix_plan).resolve()}"')
    return 0


def add_arguments(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("target", metavar="DIR_OR_RECIPE_OR_RUN", help="folder of images, recipe, or run directory")
    add_overrides(audit)
    audit.add_argument("--out", metavar="DIR", help="folder for audit.json/audit.html (default: RUN/audit/ or "
                       "<output.dir>/<name>/audit-<time>/)")  # fmt: skip
    audit.add_argument("--fix-plan", metavar="CSV", help="also write a path,action,label CSV for data.exclude")
    audit.add_argument("--no-labels", action="store_true", help="skip the label-error check (needs no cleanlab)")
    audit.add_argument("--folds", type=int, default=5, help="cross-validation folds for label errors (default 5)")
    audit.add_argument("--threshold", type=int, help="near copies: pHash bits of 64 that may differ (default 14)")
    audit.add_argument("--workers", type=int, help="threads decoding files (default: data.num_workers)")


COMMANDS = (
    Command(
        "audit",
        "check a folder's data: duplicates and train/test leaks, likely label errors, class balance",
        add_arguments,
        audit_command,
        plugin_flags=False,
    ),
)

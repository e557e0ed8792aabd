"""Your own images (``data.dataset = "imagefolder"``): three layouts, honest splits, a split file per run.

Layouts under ``data.root``, decided in one place (``detect_layout``), first match wins:

- CSV: ``data.labels = "x.csv"`` (relative to root), or a ``labels.csv`` in root, with columns
  ``path,label``, paths relative to the CSV's folder (images may sit in any sub-folders: the CSV wins
  over them). A file listed twice with the same label counts once; with two labels it is an error.
  A ``path,labels`` CSV (``a;b``: several labels per image) makes the data multi-label
  (``vitkit.data.multilabel``);
- split: ``root/train/<class>/...`` plus any of ``root/val/``, ``root/test/``;
- flat: ``root/<class>/...`` (no split at all).

Files anywhere below a class folder count (nested folders are fine); hidden files and folders
(``.name``) and files without an image suffix are skipped quietly, and so is vitkit's own output (a
run directory, or an ``output.dir`` holding runs: see ``vitkit.runs.layout``), so ``vitkit run .``
inside the photo folder never trains on its plots. Whatever split is missing is carved out of train,
stratified by class, with a fixed ``split_seed``: test first (``test_fraction``), then val
(``val_fraction``), at least one image of every class in each carved split. ``data.fold = "k/K"``
then re-cuts train+val into K folds (``vitkit.data.folds``). ``data.exclude`` (a ``path,action,label`` CSV,
``vitkit audit --fix-plan`` writes one) drops or relabels files right after the scan, before any split
is carved (``apply_exclusions``). The split that picks the best epoch (val)
is never the test split. ``split.json`` lists each split's files relative to the root (the fold
applied, and recorded); a run writes it and ``vitkit eval``, ``vitkit export``, ``vitkit compare``
and ``--resume`` read it back (``split_file``), so every command scores the same images.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

from vitkit.data.imageio import is_image_name
from vitkit.data.multilabel import label_from_names, label_ids, label_names, strata
from vitkit.errors import UserError
from vitkit.runs.layout import is_vitkit_output

LABELS_CSV = "labels.csv"  # the CSV a folder may hold; it wins over the folder's sub-folders
SPLITS = ("train", "val", "test")
Samples = list[tuple[Path, Any]]  # label: a class index, or a tuple of them (multi-label)


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def class_files(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted; hidden entries and non-images skipped."""
    return sorted(p for p in folder.rglob("*") if is_image_name(p) and p.is_file() and _visible(p, folder))


def class_folders(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder`` that are not vitkit output, sorted."""
    return sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_vitkit_output(p)
    )


def _folder_split(split: Path, classes: list[str]) -> Samples:
    samples: Samples = []
    for label, name in enumerate(classes):
        samples += [(f, label) for f in class_files(split / name)]  # empty classes: see check_classes
    return samples


def read_csv_listing(csv_path: Path) -> tuple[list[str], Samples]:
    """Classes (sorted) and samples of a ``path,label`` (or multi-label ``path,labels``) CSV; paths are
    relative to the CSV's folder."""
    if not csv_path.is_file():
        raise UserError(f"imagefolder: data.labels file {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and {"path", "labels"} <= set(rows[0]) and "label" not in rows[0]:
        from vitkit.data.multilabel import read_multilabel_rows

        return read_multilabel_rows(rows, csv_path)
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise UserError(f"imagefolder: {csv_path} needs a header row with columns path,label (or path,labels with a;b)")
    entries: dict[Path, tuple[str, int]] = {}  # one entry per file: rows, not files, would leak across splits
    for n, row in enumerate(rows, start=2):
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            raise UserError(f"imagefolder: {csv_path} line {n}: empty path or label")
        path = csv_path.parent / rel
        if not is_image_name(rel) or any(p.startswith(".") for p in Path(rel).parts):
            continue
        if not path.is_file():
            raise UserError(f"imagefolder: {csv_path} line {n}: {path} does not exist")
        key = Path(os.path.normpath(path))  # "a/../x.png" and "x.png" are one file
        if key in entries and entries[key][0] != label:
            first_label, first_line = entries[key]
            raise UserError(
                f"imagefolder: {csv_path} line {n}: {rel} is labelled {label!r} but line {first_line} labels "
                f"it {first_label!r}; give each file one label"
            )
        entries.setdefault(key, (label, n))
    classes = sorted({label for label, _ in entries.values()})
    if not classes:
        raise UserError(f"imagefolder: {csv_path} lists no image files")
    index = {name: i for i, name in enumerate(classes)}
    return classes, [(path, index[label]) for path, (label, _) in entries.items()]


EXCLUDE_ACTIONS = ("drop", "relabel", "keep", "")  # "keep"/empty: a row the user decided to leave as it is


def read_exclusions(csv_path: Path, root: Path) -> dict[Path, tuple[str, str]]:
    """``{file: (action, label)}`` of a ``path,action,label`` CSV (``data.exclude``); paths relative to
    ``root``; ``drop`` removes a file, ``relabel`` gives it ``label``; ``keep`` or empty rows change nothing."""
    if not csv_path.is_file():
        raise UserError(f"imagefolder: data.exclude file {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"path", "action"} <= set(rows[0]):
        raise UserError(f"imagefolder: {csv_path} needs a header row with columns path,action,label")
    plan: dict[Path, tuple[str, str]] = {}
    for n, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        action, label = (row.get("action") or "").strip().lower(), (row.get("label") or "").strip()
        if action not in EXCLUDE_ACTIONS:
            raise UserError(f"imagefolder: {csv_path} line {n}: action {action!r} is not drop, relabel or keep")
        if action == "relabel" and not label:
            raise UserError(f"imagefolder: {csv_path} line {n}: relabel {rel} to which label? (label column empty)")
        if rel and action in ("drop", "relabel"):
            plan[Path(os.path.normpath(root / rel))] = (action, label)
    return plan


def apply_exclusions(
    found: dict[str, Samples], classes: list[str], plan: dict[Path, tuple[str, str]], source: Path
) -> dict[str, Samples]:
    """``found`` with the ``plan`` of ``read_exclusions`` applied; a path the data does not hold, or a label
    that is not a class, is an error (the plan was made for other data)."""
    index = {name: i for i, name in enumerate(classes)}
    out: dict[str, Samples] = {}
    seen: set[Path] = set()
    for name, samples in found.items():
        kept: Samples = []
        for path, label in samples:
            action, new = plan.get(Path(os.path.normpath(path)), ("", ""))
            seen.add(Path(os.path.normpath(path)))
            if action == "drop":
                continue
            if action == "relabel":
                if new not in index:
                    raise UserError(
                        f"imagefolder: {source}: {path} relabelled {new!r}, not a class ({', '.join(classes)})"
                    )
                label = index[new]
            kept.append((path, label))
        out[name] = kept
    missing = [path for path in plan if path not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"imagefolder: {source} lists {missing[0]}{more}, not an image of this data")
    return out


def detect_layout(root: Path, labels: str = "") -> tuple[str, str]:
    """``(layout, labels)`` of a folder: ``csv`` (``labels``, or a ``labels.csv`` in root: it wins over
    sub-folders), ``split`` (``root/train/``...) or ``flat``; ``labels`` is the CSV's name for ``csv``."""
    if not root.is_dir():
        raise UserError(f"imagefolder: data.root {root} is not a folder")
    if labels:
        return "csv", labels
    if (root / LABELS_CSV).is_file():
        return "csv", LABELS_CSV
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and "train" not in present:
        raise UserError(f"imagefolder: {root} has {'/'.join(present)}/ but no train/ folder")
    return ("split" if present else "flat"), ""


def _no_class_folders(where: Path, root: Path) -> UserError:
    return UserError(
        f"imagefolder: no class folders under {where} (expected {root}/<class>/*.jpg, {root}/train/<class>/, "
        f"or a {LABELS_CSV} listing path,label)"
    )


def classes_of(root: Path, labels: str = "", split_file: str = "") -> list[str]:
    """The class names, found cheaply (folder names, the CSV or the split file) without listing images."""
    if split_file:
        return read_split(Path(split_file), root, check=False)[0]
    layout, labels = detect_layout(root, labels)
    if layout == "csv":
        return read_csv_listing(root / labels)[0]
    where = root / "train" if layout == "split" else root
    classes = class_folders(where)
    if not classes:
        raise _no_class_folders(where, root)
    return classes


def scan(root: Path, labels: str = "") -> tuple[list[str], dict[str, Samples], str]:
    """(classes, the splits found on disk, layout name) of ``root``: ``csv``, ``split`` or ``flat``."""
    layout, labels = detect_layout(root, labels)
    if layout == "csv":
        classes, samples = read_csv_listing(root / labels)
        return classes, {"train": samples}, "csv"
    if layout == "split":
        classes = class_folders(root / "train")
        if not classes:
            raise _no_class_folders(root / "train", root)
        found = {}
        for split in (s for s in SPLITS if (root / s).is_dir()):
            names = class_folders(root / split)
            if names != classes:
                raise UserError(
                    f"imagefolder: class folders of {root / split} differ from train/: {names} vs {classes}"
                )
            found[split] = _folder_split(root / split, classes)
        return classes, found, "split"
    classes = class_folders(root)
    if not classes:
        raise _no_class_folders(root, root)
    return classes, {"train": _folder_split(root, classes)}, "flat"


def check_classes(found: dict[str, Samples], dropped: set[Path], classes: list[str], root: Path, layout: str) -> None:
    """Every class has images in every split found on disk, and readable ones (``dropped``: unreadable)."""
    for name, samples in found.items():
        seen = {i for _, label in samples for i in label_ids(label)}
        readable = {i for path, label in samples if path not in dropped for i in label_ids(label)}
        for label, cls in enumerate(classes):
            where = {"split": f"class folder {root / name / cls}", "flat": f"class folder {root / cls}"}
            what = where.get(layout, f"class {cls!r} in {name}")
            if label not in seen:
                raise UserError(f"imagefolder: {what} has no images")
            if label not in readable:
                raise UserError(f"imagefolder: {what} has no readable images")


def carve(
    samples: Samples, fractions: dict[str, float], classes: list[str], seed: int, source: str
) -> dict[str, Samples]:
    """Split ``samples`` stratified by class: ``fractions`` maps each carved split to its share of the
    class (rounded, at least one image); the rest stays ``train``. Too small a class is a ``UserError``."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Samples] = {"train": [], **{name: [] for name in fractions}}
    by_class: dict[int, Samples] = {}
    for sample, stratum in zip(samples, strata(samples), strict=True):  # multi-label: the rarest label
        by_class.setdefault(stratum, []).append(sample)
    for label in range(len(classes)):
        items = by_class.get(label, [])
        counts = {name: max(1, round(len(items) * frac)) for name, frac in fractions.items()}
        need = sum(counts.values()) + 1
        if len(items) < need:
            carved = " and ".join(f"{name} ({frac:g})" for name, frac in fractions.items())
            raise UserError(
                f"imagefolder: class {classes[label]!r} has {len(items)} image{'s' * (len(items) != 1)} in "
                f"{source}: too few to carve {carved} from it (needs at least {need}); add images or "
                "provide the split folders"
            )
        order = torch.randperm(len(items), generator=g).tolist()
        start = 0
        for name, count in counts.items():
            out[name] += [items[i] for i in order[start : start + count]]
            start += count
        out["train"] += [items[i] for i in order[start:]]
    return {name: sorted(split, key=lambda s: (s[1], str(s[0]))) for name, split in out.items()}


def make_splits(
    found: dict[str, Samples], classes: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Samples]:
    """All three splits: the ones on disk, and the missing ones carved from train."""
    missing = {name: frac for name, frac in (("test", test_fraction), ("val", val_fraction)) if name not in found}
    splits = dict(found)
    if missing:
        splits.update(carve(found["train"], missing, classes, seed, "train"))
    return {name: splits[name] for name in SPLITS}


# ------------------------------------------------------------------------------------ split file


def _relative(path: Path, root: Path) -> str:
    import os

    return Path(os.path.relpath(path, root)).as_posix()


def split_record(
    splits: dict[str, Samples], classes: list[str], root: Path, layout: str, seed: int, fold: str = ""
) -> dict:
    """``split.json``'s content: each split's files (relative to ``root``) with their class names, and the
    fold (``"k/K"``) they are cut as, if any."""
    record: dict[str, Any] = {"root": str(root), "layout": layout, "split_seed": seed, "fold": fold, "classes": classes}
    record["sizes"] = {name: len(splits[name]) for name in SPLITS}
    for name in SPLITS:
        record[name] = [[_relative(path, root), label_names(label, classes)] for path, label in splits[name]]
    return record


def reuse_split(recipe: Any, run_dir: Path | None) -> None:
    """Point ``recipe.data.split_file`` at ``run_dir/split.json`` when the run has one (eval, resume, compare)."""
    if run_dir is not None and (run_dir / "split.json").is_file():
        recipe.data.split_file = str(run_dir / "split.json")


def write_split(record: dict, path: Path) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n")


def read_split(split_file: Path, root: Path, check: bool = True) -> tuple[list[str], dict[str, Samples], str, str]:
    """Classes, splits, layout and fold (``""``: none recorded) of a ``split.json``, files resolved against
    ``root``; missing files are an error."""
    try:
        record = json.loads(split_file.read_text())
        classes = list(record["classes"])
        index = {name: i for i, name in enumerate(classes)}
        splits = {
            name: [(root / rel, label_from_names(label, index)) for rel, label in record[name]] for name in SPLITS
        }
        layout = str(record.get("layout", "split"))
        fold = str(record.get("fold") or "")
    except FileNotFoundError:
        raise UserError(f"imagefolder: split file {split_file} does not exist") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"imagefolder: {split_file} is not a vitkit split.json ({err})") from None
    for name in SPLITS if check else ():
        gone = [str(path) for path, _ in splits[name] if not path.is_file()]
        if gone:
            more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
            raise UserError(
                f"imagefolder: {gone[0]}{more}, listed in {split_file} ({name}), does not exist; "
                "restore it or set data.root to where the images are"
            )
    return classes, splits, layout, fold

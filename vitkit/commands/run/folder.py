"""``vitkit run DIR``: choose a recipe for a folder of images, say why in one line, run it.

The choice (documented in docs/own_images.md):

- data: ``imagefolder`` on DIR (any layout it reads: ``DIR/<class>/``, ``DIR/train|val|test/<class>/``,
  or ``DIR/labels.csv``), the missing splits carved out of train;
- model: a pretrained ViT when its weights are in the Hugging Face cache or the hub has them:
  ViT-S/16 at 224 px on a GPU, ViT-Ti/16 at 224 px on CPU (4x fewer FLOPs), fine-tuned as
  ``recipes/folder_finetune.toml``; otherwise (offline without cached weights) the small-data ViT
  from scratch at 64 px, as ``recipes/folder_scratch.toml``; also when the weights, once chosen,
  fail to download (``run_folder`` fetches them before training and says why it switched);
- epochs: enough for about 1,000 updates when fine-tuning (5-30 epochs) or 3,000 from scratch
  (20-100 epochs), counted at the chosen batch size (64 when the GPU picks it: ``auto``);
- batch size: ``auto`` on a GPU (the largest that fits, halved), 64 on CPU; smaller for tiny folders;
- learning rate: the recipe's (fine-tuning: 1e-4 with layer decay 0.65; scratch: 1e-3), or the
  LR finder's ``valley`` with ``--lr auto``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitkit.errors import UserError
from vitkit.recipe import Recipe, apply_overrides, dump_toml, recipe_from_dict

FINETUNE_UPDATES, FINETUNE_EPOCHS = 1000, (5, 30)
SCRATCH_UPDATES, SCRATCH_EPOCHS = 3000, (20, 100)
PRETRAINED = {"cuda": "vit_small_patch16_224", "cpu": "vit_tiny_patch16_224"}
SCRATCH = "vit_sd_tiny_patch4_32"


@dataclass
class Survey:
    """What a folder holds: its layout, class names, its readable images and how many of them will train."""

    root: Path
    layout: str  # flat | split | csv
    classes: list[str]
    images: int  # readable images found
    train: int  # readable images in the train split once the missing splits are carved out (default fractions)
    unreadable: list[Path] = field(default_factory=list)  # files that do not decode; the run skips them
    found: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)  # readable (path, label) per split on disk


@dataclass
class Choice:
    """The chosen recipe (plain data, as TOML would hold it) and why, in one line."""

    recipe: dict[str, Any]
    line: str


def survey(root: str | Path) -> Survey:
    """Layout, classes, readable images and split sizes of a folder of images, as ``imagefolder`` will read,
    skip and split it with the default fractions; a folder it cannot read is a ``UserError``."""
    from vitkit.data.folder import LABELS_CSV, check_classes, class_folders, detect_layout, make_splits, scan
    from vitkit.data.imagecheck import find_bad_images
    from vitkit.engine.threads import cores
    from vitkit.recipe import DataConfig

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of images (or a TOML recipe)")
    if detect_layout(root)[0] == "flat" and not class_folders(root):  # the layout as imagefolder decides it
        raise UserError(
            f"{root} is neither a TOML recipe nor a folder of images: expected {root}/<class>/*.jpg "
            f"(one folder per class), {root}/train/<class>/..., or {root}/{LABELS_CSV}"
        )
    classes, found, layout = scan(root)
    if len(classes) < 2:
        raise UserError(f"{root} holds one class ({classes[0]}); a classifier needs at least two class folders")
    files = sorted({path for samples in found.values() for path, _ in samples})
    bad = find_bad_images(files, cores(), quick=True)  # the check the run's load makes, JPEGs at 1/8
    check_classes(found, set(bad), classes, root, layout)
    found = {name: [s for s in samples if s[0] not in bad] for name, samples in found.items()}
    config = DataConfig()
    splits = make_splits(found, classes, config.val_fraction, config.test_fraction, config.split_seed)
    return Survey(root, layout, classes, sum(map(len, splits.values())), len(splits["train"]), list(bad), found)


def _hub_file(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(Hugging Face repo, candidate files) of timm's default pretrained weights for ``name``."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None or not cfg.hf_hub_id:
        return None
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    return cfg.hf_hub_id, files


def weights_available(name: str, cache_dir: str | None = None, probe_timeout: float = 2.0) -> tuple[bool, str]:
    """(whether timm's pretrained weights for ``name`` can be had, why): cached, or the hub answers for the
    file (one HEAD request through huggingface_hub's own HTTP stack, so ``HF_ENDPOINT``, ``HTTPS_PROXY``
    and ``NO_PROXY`` count as for the download; nothing is downloaded). ``HF_HUB_OFFLINE`` forbids it."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    from vitkit.models.pretrained import hub_http_error

    source = _hub_file(name)
    if source is None:
        return False, f"timm knows no pretrained weights for {name}"
    repo, files = source
    for filename in files:
        if isinstance(try_to_load_from_cache(repo, filename, cache_dir=cache_dir), str):
            return True, f"weights cached: {repo}"
    if constants.HF_HUB_OFFLINE:
        return False, f"offline: HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache"
    from urllib.parse import urlparse

    host = urlparse(constants.ENDPOINT).hostname
    for filename in files:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename), timeout=probe_timeout)
        except (OSError, hub_http_error()) as err:
            if _no_such_file(err):
                continue  # the next candidate file
            if isinstance(err, HfHubHTTPError):  # the hub (or a proxy) answered with an error
                return False, f"{host} answered {_first_line(err)} for {repo}, which is not in the Hugging Face cache"
            return (
                False,
                f"offline: {host} is unreachable ({_first_line(err)}) and {repo} is not in the Hugging Face cache",
            )
        return True, f"weights {repo}, downloaded into the Hugging Face cache on first use"
    return False, f"{host} has no weights file {' or '.join(files)} for {repo}"


def fetch_weights(name: str, cache_dir: str | None = None) -> str | None:
    """Download timm's pretrained weights for ``name`` into the Hugging Face cache (nothing when cached);
    ``None`` when they are there (or timm names no file to fetch: building the model says so), else why not."""
    from huggingface_hub import constants, hf_hub_download

    from vitkit.models.pretrained import hub_http_error

    source = _hub_file(name)
    if source is None:
        return None
    repo, files = source
    failure = f"{constants.ENDPOINT} has no weights file {' or '.join(files)} for {repo}"
    for filename in files:
        try:
            hf_hub_download(repo, filename, cache_dir=cache_dir)
        except (OSError, hub_http_error()) as err:
            if _no_such_file(err):
                continue  # the next candidate file
            failure = f"fetching {repo} ({filename}) from {constants.ENDPOINT} failed: {_first_line(err)}"
            break
        return None
    return failure


def _no_such_file(err: BaseException) -> bool:
    """Whether the hub answered that the file does not exist (not: it could not be reached, which
    huggingface_hub reports as a missing *local* entry)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError)


def _first_line(err: BaseException) -> str:
    """An error's first sentence, for a one-line message."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def _power_of_two_at_most(n: int) -> int:
    return 1 << max(1, int(math.log2(max(n, 2))))


def _choose(
    root: str | Path, device: str | None, cache_dir: str | None, weights: tuple[bool, str] | None = None
) -> tuple[Survey, str, str, dict[str, Any]]:
    """(the folder's survey, ``cuda`` or ``cpu``, why pretrained or not, the chosen recipe as plain data);
    ``weights``: (whether pretrained weights can be had, why) when already known, else ``weights_available``."""
    info = survey(root)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = "cuda" if device.startswith("cuda") else "cpu"
    pretrained, why = weights or weights_available(PRETRAINED[kind], cache_dir)
    # batch: tiny folders get a few updates per epoch, not one
    small = _power_of_two_at_most(max(2, info.train // 3))
    batch: int | str = min(64, small) if kind == "cpu" or info.train < 256 else "auto"
    per_epoch = max(1, info.train // (batch if isinstance(batch, int) else 64))
    target, (low, high) = (FINETUNE_UPDATES, FINETUNE_EPOCHS) if pretrained else (SCRATCH_UPDATES, SCRATCH_EPOCHS)
    epochs = min(high, max(low, math.ceil(target / per_epoch)))
    recipe: dict[str, Any] = {
        "name": _name(info.root),
        "seed": 0,
        "data": {"dataset": "imagefolder", "root": str(info.root.resolve()), "batch_size": batch},
    }
    if info.layout == "csv":
        recipe["data"]["labels"] = "labels.csv"  # the one CSV name vitkit run DIR looks for
    if pretrained:  # the settings of recipes/folder_finetune.toml
        recipe["model"] = {"name": PRETRAINED[kind], "pretrained": True, "drop_path_rate": 0.1}
        recipe["optimizer"] = {"name": "adamw", "lr": 1e-4, "weight_decay": 0.05, "layer_decay": 0.65}
        recipe["scheduler"] = {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01}
    else:  # the settings of recipes/folder_scratch.toml
        recipe["model"] = {"name": SCRATCH, "img_size": 64, "patch_size": 8, "drop_path_rate": 0.1}
        recipe["data"]["crop_scale"] = 0.35
        recipe["augment"] = {"train": [{"name": "randaugment", "num_ops": 2, "magnitude": 7}]}
        recipe["optimizer"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}
        recipe["scheduler"] = {"name": "cosine", "warmup_epochs": max(1, epochs // 20), "min_lr_ratio": 0.01}
    multi_label = any(isinstance(label, tuple) for samples in info.found.values() for _, label in samples)
    recipe["loss"] = {"name": "bce"} if multi_label else {"name": "cross_entropy", "label_smoothing": 0.1}
    recipe["train"] = {"epochs": epochs, "clip_grad": 1.0}
    return info, kind, why, recipe


def choice_line(info: Survey, recipe: Recipe, kind: str, why: str) -> str:
    """The one line ``vitkit run DIR`` prints: what the folder holds and what ``recipe`` (after ``--set``) runs;
    ``why``: why its model was chosen (``""``: the model was named with ``--set``)."""
    from vitkit.data.folder import make_splits

    data = recipe.data
    train = len(make_splits(info.found, info.classes, data.val_fraction, data.test_fraction, data.split_seed)["train"])
    model, name = recipe.model, recipe.model["name"]
    notes = [why] if why else []
    if model.get("pretrained"):
        if kind == "cpu" and name == PRETRAINED["cpu"]:
            notes.append("ViT-Ti/16: ViT-S/16 is 4x slower on CPU")
        how = f"{name} pretrained at {model.get('img_size', 224)} px" + (f" ({'; '.join(notes)})" if notes else "")
    else:
        size = f" at {model['img_size']} px" if "img_size" in model else ""
        how = f"{name} from scratch{size}" + (f", no pretrained weights ({why})" if why else "")
    batch = data.batch_size
    per_epoch = max(1, train // (batch if isinstance(batch, int) else 64)) // recipe.train.grad_accum_steps
    epochs = recipe.train.epochs
    updates = f"~{max(1, per_epoch) * epochs:,} updates" + ("" if isinstance(batch, int) else " at batch 64")
    skipped = f", {len(info.unreadable):,} unreadable skipped" if info.unreadable else ""
    return (
        f"{info.root} chose: imagefolder ({info.layout}, {len(info.classes)} classes, "
        f"{info.images:,} images{skipped}, {train:,} to train) -> {how}; "
        f"{epochs} epochs ({updates}), batch {batch}, lr {recipe.optimizer['lr']:g} on {kind}"
    )


def choose(
    root: str | Path, device: str | None = None, cache_dir: str | None = None, weights: tuple[bool, str] | None = None
) -> Choice:
    """The recipe ``vitkit run DIR`` trains for the images under ``root`` on ``device`` (``None``: this machine's);
    ``weights``: see ``_choose``."""
    info, kind, why, recipe = _choose(root, device, cache_dir, weights)
    return Choice(recipe, choice_line(info, recipe_from_dict(recipe), kind, why))


def _name(root: Path) -> str:
    name = root.resolve().name or "images"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def folder_recipe(
    root: str | Path, overrides: list[str] | None = None, weights: tuple[bool, str] | None = None
) -> tuple[Recipe, Choice]:
    """The chosen recipe for ``root`` with ``--set`` overrides applied, validated; the line says what it runs
    (``weights``: see ``_choose``)."""
    info, kind, why, chosen = _choose(root, None, None, weights)
    data = apply_overrides(chosen, overrides or [])
    recipe = recipe_from_dict(data)
    same = all(data["model"].get(key) == chosen["model"].get(key) for key in ("name", "pretrained"))
    return recipe, Choice(data, choice_line(info, recipe, kind, why if same else ""))


def recipe_for(source: str, overrides: list[str]) -> Recipe:
    """A recipe file, or the recipe ``vitkit run DIR`` would choose for a folder of images."""
    from vitkit.recipe import load_recipe

    if Path(source).is_dir():
        recipe, choice = folder_recipe(source, overrides)
        print(f"vitkit run {choice.line}")
        return recipe
    return load_recipe(source, overrides)


def recipe_text(choice: Choice) -> str:
    """The chosen recipe as TOML, the choice in a comment on top (``vitkit run DIR --dry-run > my.toml``)."""
    return f"# vitkit run {choice.line}\n" + dump_toml(choice.recipe)


def with_found_lr(recipe: Recipe, plugins: Any = None, steps: int | None = None) -> tuple[Recipe, str, Any]:
    """``--lr auto``: (the recipe with ``optimizer.lr`` set to the LR finder's valley suggestion, 2 digits;
    a line saying so; the finder's ``LRFindResult``)."""
    from vitkit.engine.lr_finder import DEFAULT_STEPS, lr_find

    result = lr_find(recipe, steps or DEFAULT_STEPS, plugins=plugins)
    if "valley" not in result.suggestions:
        raise UserError("--lr auto: the LR finder found no suggestion (the loss diverged too early); set optimizer.lr")
    lr = float(f"{result.suggestions['valley']:.2g}")
    data = recipe.to_dict()
    data["optimizer"] = {**data["optimizer"], "lr": lr}
    found = recipe_from_dict(data, source=recipe.source)
    return found, f"--lr auto: {lr:g} (lr-find valley; steepest {result.suggestions['steepest']:.2g})", result


def fit(recipe: Recipe, plugins: Any = None, lr_auto: bool = False) -> dict[str, Any]:
    """Train ``recipe``; ``lr_auto``: first set its LR with the finder, whose curve then lands in the
    run directory as ``lr_find.png`` and ``lr_find.csv``. Returns the summary."""
    from vitkit.engine.console import console
    from vitkit.engine.fit import fit_guarded
    from vitkit.engine.lr_finder import plot_lr_find, write_csv

    found = None
    if lr_auto:
        recipe, how, found = with_found_lr(recipe, plugins)
        console.print(how, soft_wrap=True)
    summary = fit_guarded(recipe, plugins=plugins, data=found.data if found is not None else None)
    if found is not None and summary.get("run_dir"):
        plot_lr_find(found, Path(summary["run_dir"]) / "lr_find.png", recipe.name)
        write_csv(found, Path(summary["run_dir"]) / "lr_find.csv")
    return summary


def run_folder(root: str, overrides: list[str], dry_run: bool, lr_auto: bool, load_plugins: Any) -> int:
    """``vitkit run DIR``: print the choice in one line, then train (``dry_run``: print the recipe as TOML)."""
    recipe, choice = folder_recipe(root, overrides)
    if dry_run:
        print(recipe_text(choice), end="")
        return 0
    from vitkit.engine.console import console

    console.print(f"vitkit run {choice.line}", soft_wrap=True)
    if recipe.model.get("pretrained") is True:  # fetch now: if that fails, train from scratch instead
        failure = fetch_weights(str(recipe.model["name"]))
        if failure is not None:
            why = f"{failure}; to fine-tune, run again once it downloads, or set model.checkpoint_path"
            recipe, choice = folder_recipe(root, overrides, weights=(False, why))
            console.print(f"vitkit run {choice.line}", soft_wrap=True)
    out = Path(recipe.output.dir).resolve()
    if out.is_relative_to(Path(root).resolve()):
        console.print(
            f"[yellow]note:[/] runs are written to {out}, inside the image folder; vitkit never reads its own "
            "runs as images (--set output.dir=... puts them elsewhere)",
            soft_wrap=True,
        )
    manager, _ = load_plugins(recipe)
    fit(recipe, manager, lr_auto)
    return 0

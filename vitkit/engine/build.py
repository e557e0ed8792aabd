"""Recipe -> components. Every user mistake surfacing here names the recipe file and the key."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from vitkit.errors import UserError
from vitkit.recipe import Recipe
from vitkit.registry import AUGMENTATIONS, DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS, Registry, split_spec


def _accepted(factory: Any) -> tuple[set[str], bool]:
    """(keyword names, takes **kwargs) of a factory."""
    params = inspect.signature(factory).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}, any(p.kind is p.VAR_KEYWORD for p in params)


def create(
    registry: Registry, spec: Any, recipe: Recipe, key: str, provided: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """``registry.create`` with the recipe's keys checked against the factory's signature.

    ``provided`` names arguments vitkit passes itself (not recipe keys); ``kwargs`` are those values.
    """
    where = recipe.where()
    try:
        name, options = split_spec(spec)
        entry = registry.get(name)
    except UserError as err:
        raise UserError(f"{where}: {key}: {err}") from None
    names, open_kwargs = _accepted(entry.factory)
    for option in options:
        if option in provided:
            raise UserError(f"{where}: {key}.{option} is set by vitkit; remove it from the recipe")
        if option not in names and not open_kwargs:
            choices = sorted(names - set(provided))
            close = difflib.get_close_matches(option, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; it takes: {', '.join(choices) or 'nothing'}"
            raise UserError(f"{where}: unknown key {key}.{option} for {registry.kind} {name!r}{hint}")
    try:
        return entry.factory(**options, **kwargs)
    except UserError as err:
        raise UserError(f"{where}: {key}: {err}") from None
    except (ValueError, TypeError) as err:
        raise UserError(f"{where}: {key} ({name}): {err}") from None


def build_model(
    recipe: Recipe, num_classes: int | None = None, in_chans: int | None = None, pretrained: bool = True
) -> nn.Module:
    """The recipe's model; ``num_classes``/``in_chans`` come from the dataset unless the recipe sets them.
    ``pretrained=False``: never fetch ``model.pretrained`` weights (a trained state replaces them)."""
    spec = dict(recipe.model)
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if value is None:
            continue
        if key in spec and spec[key] != value:
            raise UserError(f"{recipe.where()}: model.{key} = {spec[key]} but the dataset has {value}")
        spec[key] = value
    checkpoint = spec.pop("checkpoint_path", None)
    wanted = spec.pop("pretrained", False)
    try:
        from vitkit.models.pretrained import wants_pretrained

        pretrained = wanted if wants_pretrained(wanted) and pretrained else False
    except UserError as err:
        raise UserError(f"{recipe.where()}: {err}") from None
    native = str(spec["name"]).startswith("timm/")
    if pretrained and native and checkpoint is None:
        spec["pretrained"] = pretrained  # timm/<name>: timm loads, resizes and resets the head itself
    model = create(MODELS, spec, recipe, "model")
    if pretrained and not native and checkpoint is None:
        from vitkit.models.timm_bridge import load_pretrained

        try:
            load_pretrained(model, spec["name"], pretrained)
        except UserError as err:
            raise UserError(f"{recipe.where()}: model.pretrained: {err}") from None
    if checkpoint is not None:  # start from these weights (vitkit or timm; a head for other classes is reset)
        from vitkit.models.timm_bridge import load_weights

        if not isinstance(checkpoint, str):
            raise UserError(f"{recipe.where()}: model.checkpoint_path: expected a file path, got {checkpoint!r}")
        try:
            load_weights(model, checkpoint, reset_head=True, convert=not spec["name"].startswith("timm/"))
        except UserError as err:
            raise UserError(f"{recipe.where()}: model.checkpoint_path: {err}") from None
    return model


def model_img_size(recipe: Recipe) -> int:
    """The square input size of the recipe's model: its ``img_size`` key, else the config's default,
    else (a factory taking ``**kwargs``) the ``img_size`` of the model it builds."""
    size = recipe.model.get("img_size")
    if size is None:
        try:
            factory = MODELS.get(recipe.model["name"]).factory
        except UserError as err:
            raise UserError(f"{recipe.where()}: model: {err}") from None
        param = inspect.signature(factory).parameters.get("img_size")
        size = param.default if param is not None else None
        if size is None and _accepted(factory)[1]:
            size = getattr(create(MODELS, recipe.model, recipe, "model"), "img_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"{recipe.where()}: model.img_size: expected a positive integer input size, got {size!r}")
    return size


def FILE_DATA_KEYS(data: Any) -> dict[str, Any]:  # noqa: N802 (a table of keys)
    """The ``data`` keys passed to datasets of files (imagefolder, webdataset, hf) that take them."""
    keys = ("on_bad_image", "labels", "test_fraction", "split_seed", "split_file", "fold", "cache", "cache_dir")
    streams = ("train", "val", "test", "shuffle", "image_key", "label_key", "streaming")  # webdataset, hf
    return {key: getattr(data, key) for key in (*keys, "cache_limit_gb", "cache_max_gb", "exclude", *streams)}


@dataclass(frozen=True)
class Preprocessing:
    """How a run turns an image into model input, resolved once per run (``preprocessing``)."""

    crop_pct: float  # file-backed data: eval crop share (resize short side to img_size / crop_pct, centre crop)
    interpolation: str  # bilinear | bicubic
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None  # the pretrained weights' (mean, std) for RGB data

    def mean_std(self, in_chans: int, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple, tuple]:
        """The normalisation of data with ``in_chans`` channels whose own statistics are ``mean``/``std``."""
        return self.norm if self.norm is not None and in_chans == 3 else (tuple(mean), tuple(std))


def preprocessing(recipe: Recipe) -> Preprocessing:
    """A run's preprocessing, decided in this one place before anything is built: the recipe's
    ``data.crop_pct``/``data.interpolation``, else the pretrained weights' config (timm's table, or an
    ``hf-hub:`` repo's config.json), else 0.875 and bilinear; mean and std of pretrained weights."""
    from vitkit.models.pretrained import pretrained_cfg

    try:
        cfg = pretrained_cfg(str(recipe.model.get("name", "")), recipe.model.get("pretrained")) or {}
    except UserError as err:
        raise UserError(f"{recipe.where()}: model.pretrained: {err}") from None
    interpolation = cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear"
    mean, std = tuple(cfg.get("mean") or ()), tuple(cfg.get("std") or ())
    return Preprocessing(
        crop_pct=recipe.data.crop_pct or float(cfg.get("crop_pct") or 0.875),
        interpolation=recipe.data.interpolation or interpolation,
        norm=(mean, std) if len(mean) == 3 and len(std) == 3 else None,
    )


def build_dataset(recipe: Recipe, img_size: int, device: Any = None, view: Preprocessing | None = None) -> Any:
    """The recipe's dataset object (described, not loaded: ``load_dataset`` loads it); ``device``: where a
    file-backed dataset may decode (imagefolder: nvjpeg on CUDA); ``view``: the run's ``preprocessing``."""
    data = recipe.data
    if data.fold:
        from vitkit.data.folds import parse_fold

        try:
            parse_fold(data.fold)
        except UserError as err:
            raise UserError(f"{recipe.where()}: {err}") from None
    extra = {"decode_device": str(device)} if device is not None else {}
    name, _ = split_spec(data.dataset)
    accepted = _accepted(DATASETS.get(name).factory)[0] if name in DATASETS else set()
    view = view or preprocessing(recipe)
    for key, value in {**FILE_DATA_KEYS(data), "crop_pct": view.crop_pct, "interpolation": view.interpolation}.items():
        if key in accepted:
            extra[key] = value  # datasets of files only
    extra = {k: v for k, v in extra.items() if k in accepted}
    return create(
        DATASETS,
        data.dataset,
        recipe,
        "data.dataset",
        provided=("img_size", *extra),
        img_size=img_size,
        val_fraction=data.val_fraction,
        root=data.root,
        download=data.download,
        num_workers=data.num_workers,
        **extra,
    )


def load_dataset(
    recipe: Recipe,
    img_size: int,
    device: Any = None,
    run_dir: Any = None,
    only: tuple[str, ...] | None = None,
    view: Preprocessing | None = None,
) -> Any:
    """The recipe's data, loaded: the one path from a recipe to its splits for every command (train,
    ``--resume``, eval, export, compare, lr-find). ``run_dir``: a finished run whose ``split.json`` fixes
    the files of each split; ``only``: the splits the caller will read (a file-backed dataset decodes just
    those). ``data.fold`` is applied here, once. Errors name the recipe's ``data``."""
    from vitkit.data.folder import reuse_split

    reuse_split(recipe, run_dir)
    dataset = build_dataset(recipe, img_size, device, view)
    takes = inspect.signature(dataset.load).parameters
    try:
        splits = dataset.load(only=only) if "only" in takes else dataset.load()
        if recipe.data.fold and getattr(dataset, "fold", None) != recipe.data.fold:  # in-memory sets fold here
            from vitkit.data.fold_splits import apply_fold

            splits = apply_fold(splits, recipe.data.fold)
        return splits
    except UserError as err:
        raise UserError(f"{recipe.where()}: data: {err}") from None


def _with_context(registry: Registry, spec: Any, recipe: Recipe, key: str, **context: Any) -> Any:
    """``create`` passing the ``context`` values (num_classes, img_size, ...) that the factory takes."""
    try:
        name, _ = split_spec(spec)
        names, _ = _accepted(registry.get(name).factory)
    except UserError as err:
        raise UserError(f"{recipe.where()}: {key}: {err}") from None
    given = {k: v for k, v in context.items() if k in names}
    return create(registry, spec, recipe, key, provided=tuple(given), **given)


def label_smoothing(recipe: Recipe) -> float:
    """The recipe's label smoothing (``loss.label_smoothing``), which mixup/cutmix fold into targets."""
    value = recipe.loss.get("label_smoothing", 0.0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def augment_specs(recipe: Recipe) -> list[Any]:
    """``augment.train`` plus a ``mixup_cutmix`` entry when ``augment.mixup``/``augment.cutmix`` are set."""
    aug = recipe.augment
    specs = list(aug.train)
    if aug.mixup > 0 or aug.cutmix > 0:
        specs.append(
            {
                "name": "mixup_cutmix",
                "mixup_alpha": aug.mixup,
                "cutmix_alpha": aug.cutmix,
                "prob": aug.mix_prob,
                "switch_prob": aug.switch_prob,
                "off_epoch": aug.mix_off_epoch,
            }
        )
    return specs


def build_augments(recipe: Recipe, num_classes: int = 10, img_size: int | None = None) -> list[Any]:
    """The training augmentations, in order; mixing ones get the class count and label smoothing."""
    img_size = img_size or model_img_size(recipe)
    context = {"num_classes": num_classes, "img_size": img_size, "label_smoothing": label_smoothing(recipe)}
    return [
        _with_context(AUGMENTATIONS, spec, recipe, f"augment.train[{i}]", **context)
        for i, spec in enumerate(augment_specs(recipe))
    ]


def build_loss(recipe: Recipe, num_classes: int = 10, in_chans: int = 3, img_size: int | None = None) -> nn.Module:
    """The recipe's loss; distillation also gets the data's classes, channels and input size."""
    context = {"num_classes": num_classes, "in_chans": in_chans, "img_size": img_size or model_img_size(recipe)}
    return _with_context(LOSSES, recipe.loss, recipe, "loss", **context)


def _default(registry: Registry, spec: Any, recipe: Recipe, key: str, arg: str, fallback: Any) -> Any:
    """The default of argument ``arg`` in the factory that ``spec`` names (``fallback`` if it has none)."""
    try:
        name, _ = split_spec(spec)
        param = inspect.signature(registry.get(name).factory).parameters.get(arg)
    except UserError as err:
        raise UserError(f"{recipe.where()}: {key}: {err}") from None
    return fallback if param is None or param.default is inspect.Parameter.empty else param.default


def build_optimizer(recipe: Recipe, model: nn.Module) -> Any:
    from vitkit.optim import apply_lr_scales, param_groups

    spec = dict(recipe.optimizer)
    weight_decay = spec.pop("weight_decay", None)
    if weight_decay is None:  # the optimizer's own default (SGD 5e-4, AdamW 0.05), not one for all
        weight_decay = _default(OPTIMIZERS, spec, recipe, "optimizer", "weight_decay", 0.0)
    layer_decay = spec.pop("layer_decay", None)
    try:
        groups = param_groups(model, weight_decay, layer_decay)
    except (TypeError, ValueError) as err:
        raise UserError(f"{recipe.where()}: optimizer.layer_decay: {err}") from None
    optimizer = create(
        OPTIMIZERS, spec, recipe, "optimizer", provided=("params",), params=groups, weight_decay=weight_decay
    )
    apply_lr_scales(optimizer)
    return optimizer


def build_scheduler(recipe: Recipe, optimizer: Any, total_steps: int, steps_per_epoch: int) -> Any:
    return create(
        SCHEDULERS,
        recipe.scheduler,
        recipe,
        "scheduler",
        provided=("optimizer", "total_steps", "steps_per_epoch"),
        optimizer=optimizer,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )

"""TOML recipes: read, follow ``extends``, apply ``--set`` overrides, validate into a typed ``Recipe``."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from vitkit.errors import UserError
from vitkit.recipe_fields import EpochSizes, Spec, _f, build_table


@dataclass
class DataConfig:
    """``[data]``: which dataset, where it lives, how it is batched."""

    dataset: Spec = _f("digits", doc="registered dataset name or spec")
    root: str = _f("data", doc="folder holding (or receiving) the dataset files")
    download: bool = _f(False, doc="torchvision datasets: download when missing")
    val_fraction: float = _f(0.1, min=0.0, max=0.5, above=True, doc="share of train held out for validation")
    batch_size: int | str = _f(64, min=1, doc='images per optimizer micro-step, or "auto" (GPU: largest that fits)')
    eval_batch_size: int = _f(0, min=0, doc="images per evaluation batch (0: 4x batch_size)")
    num_workers: int = _f(2, min=0, doc="DataLoader workers for file-backed datasets")
    on_bad_image: str = _f("skip", choices=("skip", "error"), doc="imagefolder: skip unreadable files, or fail")
    labels: str = _f("", doc="imagefolder: path,label CSV under root (default: root/labels.csv if present)")
    test_fraction: float = _f(0.1, min=0.0, max=0.5, above=True, doc="imagefolder: share carved for test")
    split_seed: int = _f(0, min=0, doc="imagefolder: seed of the carved splits (independent of seed)")
    split_file: str = _f("", doc="imagefolder: reuse a run's split.json (set by eval, compare, --resume)")
    crop_pct: float = _f(0.0, min=0.0, max=1.0, doc="imagefolder: eval crop share (0: pretrained's or 0.875)")
    interpolation: str = _f("", choices=("", "bilinear", "bicubic"), doc="imagefolder: resize filter (pretrained's)")
    train_crop: str = _f("random_resized_crop", choices=("random_resized_crop", "center"), doc="imagefolder")
    crop_scale: float = _f(0.08, min=0.0, max=1.0, above=True, doc="imagefolder: smallest random crop area")
    hflip: float = _f(0.5, min=0.0, max=1.0, doc="imagefolder: chance of a left-right flip in training")
    cache: str = _f("auto", choices=("auto", "memory", "disk", "off"), doc="imagefolder: decoded-image cache")
    cache_dir: str = _f("", doc="imagefolder: folder of disk caches (default <root>/.vitkit-cache)")
    cache_limit_gb: float = _f(4.0, min=0.0, doc='imagefolder: largest cache "auto" keeps in memory')
    cache_max_gb: float = _f(50.0, min=0.0, doc="imagefolder: cache_dir kept under this size (least recently used go)")
    balance: str = _f("none", choices=("none", "sampler", "loss"), doc="class imbalance: weighted draws or loss")
    exclude: str = _f("", doc="imagefolder: path,action,label CSV (under root) of files to drop/relabel (vitkit audit)")
    fold: str = _f("", doc='"k/K": K-fold cross-validation, fold k of train+val as val ("": the usual split)')
    train: str | list = _f("", doc="webdataset: training shards, a brace pattern or a list (under root); hf: split")
    val: str | list = _f("", doc="webdataset: validation shards; hf: split name (none: carved from train)")
    test: str | list = _f("", doc="webdataset: test shards; hf: split name (none: carved from train)")
    shuffle: int = _f(
        1000, min=0, doc="webdataset, hf streaming: shuffle buffer of training samples per worker (0: off)"
    )
    image_key: str = _f("image", doc="hf: the column holding the images")
    label_key: str = _f("label", doc="hf: the column holding the class labels")
    streaming: bool = _f(False, doc="hf: stream the splits shard by shard (as webdataset) instead of loading them")


@dataclass
class AugmentConfig:
    """``[augment]``: batched augmentations applied to training batches, in order."""

    train: list = _f([], doc="augmentation names or specs")
    mixup: float = _f(0.0, min=0.0, doc="mixup alpha (0: off); label smoothing comes from loss.label_smoothing")
    cutmix: float = _f(0.0, min=0.0, doc="cutmix alpha (0: off)")
    mix_prob: float = _f(1.0, min=0.0, max=1.0, doc="share of batches mixed")
    switch_prob: float = _f(0.5, min=0.0, max=1.0, doc="with both on: chance a batch uses cutmix")
    mix_off_epoch: int = _f(0, min=0, doc="no mixing from this epoch on (0: mix throughout)")


@dataclass
class EarlyStoppingConfig:
    """``train.early_stopping``: stop when ``metric`` has not improved by ``min_delta`` for ``patience`` epochs."""

    metric: str = _f("val_acc", doc="any column of metrics.csv, e.g. val_acc, val_loss, ema_val_acc")
    patience: int = _f(0, min=0, doc="epochs without improvement before stopping (0: off)")
    min_delta: float = _f(0.0, min=0.0, doc="smallest change that counts as an improvement")
    mode: str = _f("auto", choices=("auto", "max", "min"), doc="auto: max for *acc*, min otherwise")


@dataclass
class ProgressiveConfig:
    """``train.progressive``: train at smaller images first, at ``model.img_size`` at the end (progressive
    resizing); evaluation is always at ``model.img_size``. ``start``/``until`` grow the size linearly, or
    ``sizes`` lists ``[epoch, img_size]`` pairs; sizes are multiples of the patch size."""

    start: float = _f(1.0, min=0.0, max=1.0, above=True, doc="first epoch's size as a share of img_size (1: off)")
    until: float = _f(0.5, min=0.0, max=1.0, above=True, doc="share of the epochs below full size (with start)")
    sizes: EpochSizes = _f([], doc="[[epoch, img_size], ...]: from that epoch on, that size (instead of start)")


@dataclass
class TrainConfig:
    """``[train]``: the loop."""

    epochs: int = _f(10, min=1)
    precision: str = _f("auto", choices=("auto", "fp32", "bf16", "fp16"))
    device: str = _f("auto", doc="auto | cpu | cuda | cuda:N | mps")
    grad_accum_steps: int = _f(1, min=1)
    clip_grad: float = _f(0.0, min=0.0, doc="gradient clipping threshold (0: off)")
    clip_mode: str = _f("norm", choices=("norm", "value"), doc="clip the global norm, or each value")
    ema: float = _f(0.0, min=0.0, max=1.0, doc="EMA decay of the weights per update (0: off; e.g. 0.999)")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    deterministic: bool = _f(False, doc="torch.use_deterministic_algorithms (slower; exact repeats on GPU)")
    tf32: bool = _f(True, doc="fp32 on an Ampere+ GPU: TF32 matmuls (false: full fp32)")
    channels_last: bool = _f(False, doc="channels-last memory format for model and inputs")
    strategy: str = _f("ddp", choices=("ddp", "fsdp"), doc="multi-process strategy under torchrun")
    compile: bool | str = _f(False, doc='torch.compile the model; "auto": only when it pays (measured)')
    grad_checkpointing: bool = _f(False, doc="recompute block activations in backward: less memory, more time")
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    log_every: int = _f(0, min=0, doc="progress refresh in steps (0: auto)")
    threads: int = _f(0, min=0, doc="CPU threads for torch's ops (0: torch's default, one per core); --threads")
    wait_timeout: float = _f(
        600.0, min=0.0, above=True, doc="seconds a collective (torchrun) or a batch from the workers may wait"
    )


@dataclass
class OutputConfig:
    """``[output]``: where the run directory goes and what it holds."""

    dir: str = _f("runs", doc="parent folder of runs/<name>/<time>/")
    plots: bool = _f(True, doc="write loss.png and accuracy.png")


@dataclass
class TuneConfig:
    """``[tune]``: what ``vitkit tune`` searches and how (its command line adds to and overrides this)."""

    space: list = _f([], doc='"KEY=loguniform(a,b)" | uniform(a,b) | int(a,b) | choice(x,y,...) entries')
    trials: int = _f(20, min=1, doc="trials the study finishes (complete or pruned)")
    metric: str = _f("best_val_loss", doc="best_val_loss (val loss of the kept epoch) or a summary.json key")
    direction: str = _f("auto", choices=("auto", "minimize", "maximize"), doc="auto: minimize loss/size, else maximize")
    sampler: str = _f("tpe", choices=("tpe", "random"), doc="Optuna sampler, seeded by tune.seed")
    pruner: str = _f("median", choices=("median", "hyperband", "none"), doc="stop trials far behind after an epoch")
    seed: int = _f(0, min=0, doc="the sampler's seed (each trial trains with the recipe's seed)")
    folds: int = _f(0, min=0, doc="score each trial by K-fold cross-validation on train+val (0: off; K >= 2)")
    storage: str = _f("", doc="an Optuna storage URL (default: sqlite study.db in the study folder)")


@dataclass
class Recipe:
    """A validated recipe. ``source`` is the file it came from (``None`` for a dict)."""

    name: str = _f("run")
    seed: int = _f(0, min=0)
    plugins: list = _f([], doc="plugin modules or .py paths (relative to the recipe)")
    model: dict = _f({"name": "vit_nano_patch4_16"}, doc="model spec: name + constructor keywords")
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: dict = _f({"name": "adamw", "lr": 1e-3, "weight_decay": 0.05})
    scheduler: dict = _f({"name": "cosine", "warmup_epochs": 0})
    loss: dict = _f({"name": "cross_entropy"})
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain TOML-able data (what ``recipe.toml`` in a run holds)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        return data

    def where(self) -> str:
        return str(self.source) if self.source else "recipe"


SPEC_TABLES = ("model", "optimizer", "scheduler", "loss")


# ---------------------------------------------------------------------------------------- reading


def read_toml(path: str | Path, chain: tuple[Path, ...] = (), named: str = "") -> dict[str, Any]:
    """A recipe file as a dict, with its ``extends`` chain merged in (the file itself wins)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"recipe file {str(path)!r} is a folder, not a TOML file")
    if not path.is_file():
        if chain:
            raise UserError(f"{chain[-1]}: extends {named!r}, which does not exist")
        raise UserError(f"recipe file {str(path)!r} does not exist")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(p.name for p in (*chain, resolved))
        raise UserError(f"{path}: extends cycle {cycle}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    for key in SPEC_TABLES:
        if isinstance(data.get(key), str):
            data[key] = {"name": data[key]}
    if "plugins" in data and isinstance(data["plugins"], list):
        for given in data["plugins"]:
            resolved = _plugin_path(given, path.parent)
            if isinstance(resolved, str) and resolved.endswith(".py") and not Path(resolved).is_file():
                raise UserError(f"{path}: plugins: {given!r} does not exist ({resolved})")
        data["plugins"] = [_plugin_path(p, path.parent) for p in data["plugins"]]
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends: expected a file name, got {parent!r}")
    base = read_toml(path.parent / parent, (*chain, resolved), parent)
    return merge(base, data)


def _plugin_path(entry: Any, base: Path) -> Any:
    """``.py`` plugin paths are relative to the recipe that names them; modules stay as they are."""
    if isinstance(entry, str) and entry.endswith(".py") and not Path(entry).is_absolute():
        return str((base / entry).resolve())
    return entry


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key, recursively; any other value in ``top`` replaces ``base``'s."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value); the value is TOML, or a bare string when not TOML."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(part.strip() for part in path):
        raise UserError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=5")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [p.strip() for p in path], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides in order; intermediate tables are created as needed."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if isinstance(child, str) and part in SPEC_TABLES + ("dataset",):
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {part!r} is a value, not a table")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, merge, override and validate a recipe file."""
    data = apply_overrides(read_toml(path), overrides or [])
    return recipe_from_dict(data, source=Path(path))


# ------------------------------------------------------------------------------------- validation


def recipe_from_dict(data: dict[str, Any], source: Path | None = None) -> Recipe:
    """Validate plain data into a ``Recipe``; errors name the file and the key."""
    where = str(source) if source else "recipe"
    data = dict(data)
    data.pop("extends", None)
    defaults = Recipe()
    for key in SPEC_TABLES:
        if isinstance(data.get(key), str):
            data[key] = {"name": data[key]}
        default = getattr(defaults, key)
        if isinstance(data.get(key), dict) and data[key].get("name", default["name"]) == default["name"]:
            data[key] = {**default, **data[key]}  # keys without a name refine the default component
    recipe = build_table(Recipe, data, where, "")
    recipe.source = source
    return recipe


# ---------------------------------------------------------------------------------------- writing


def dump_toml(data: dict[str, Any]) -> str:
    """Plain data -> TOML text (scalars first, then one ``[table]`` per dict, nested dicts inline)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")

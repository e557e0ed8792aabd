"""A finished run, opened once: ``open_run(path) -> FinishedRun`` turns a run directory, a checkpoint, a
``model.safetensors`` or a folder ``vitkit export --format hf`` wrote (local, or ``hf-hub:org/name``) into
what every command after training needs: the model with its weights (eval mode, CPU) and temperature, the
data metadata (classes, input, preprocessing, multi-label thresholds), the recipe, and the run's data
through the one data path (``build.load_dataset``, with the run's ``split.json``).

eval, predict (``vitkit.load``), export, push, serve, audit, shards and compare open runs here; none of
them rebuilds a run piece by piece."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitkit.errors import UserError
from vitkit.runs.layout import is_run_dir

if TYPE_CHECKING:
    from torch import nn

    from vitkit.engine.build import Preprocessing
    from vitkit.recipe import Recipe


@dataclass
class FinishedRun:
    """A trained model as its run left it: ``model`` in eval mode on the CPU, ``data`` its metadata (what
    prediction needs to turn an image into its input), ``spec`` the model table, ``recipe_data`` the saved
    recipe (``None`` for a model file outside a run directory), ``temperature`` (1.0: uncalibrated), and
    ``state`` the checkpoint's other entries (epoch, batch size; empty for a safetensors file)."""

    model: nn.Module
    data: dict[str, Any]
    source: Path
    spec: dict[str, Any]
    recipe_data: dict[str, Any] | None
    temperature: float = 1.0
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """The run directory the weights came from (the folder holding the file, for a lone file)."""
        return self.source.parent.parent if self.source.parent.name == "checkpoints" else self.source.parent

    @property
    def in_run_dir(self) -> bool:
        """Whether ``run_dir`` is a real run directory (recipe.toml and checkpoints/)."""
        return is_run_dir(self.run_dir)

    @property
    def name(self) -> str:
        """The recipe's name (a lone model file: its folder's)."""
        if self.recipe_data is None and not self.in_run_dir:
            return self.run_dir.name
        return self.recipe().name

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label runs: the per-class thresholds chosen on val; ``None``: a single-label run."""
        return self.data.get("thresholds")

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing the run trained and evaluated with, as its metadata records it."""
        from vitkit.engine.build import Preprocessing

        mean, std = tuple(self.data["mean"]), tuple(self.data["std"])
        return Preprocessing(
            crop_pct=float(self.data.get("crop_pct") or 0.0),
            interpolation=self.data.get("interpolation") or "bilinear",
            norm=(mean, std) if len(mean) == 3 else None,
        )

    def recipe(self, data_root: str | None = None, overrides: Sequence[str] = ()) -> Recipe:
        """The run's recipe with ``--set`` ``overrides`` (``data_root`` replaces its ``data.root``: a dataset
        that moved); its starting weights (``model.checkpoint_path``) dropped: the run's own replace them."""
        from vitkit.recipe import apply_overrides, load_recipe, recipe_from_dict

        if self.recipe_data is not None:
            saved = apply_overrides(json.loads(json.dumps(self.recipe_data)), list(overrides))
            recipe = recipe_from_dict(saved, source=self.source)
        elif self.in_run_dir:
            recipe = load_recipe(self.run_dir / "recipe.toml", list(overrides))
        else:
            raise UserError(f"{self.source}: a model file holds no recipe or data; give its run directory")
        if data_root is not None:
            recipe.data.root = data_root
        recipe.model.pop("checkpoint_path", None)
        return recipe

    def load_data(
        self,
        only: tuple[str, ...] | None = None,
        data_root: str | None = None,
        device: Any = None,
        overrides: Sequence[str] = (),
    ) -> Any:
        """The run's splits (``DataSplits``) through ``build.load_dataset``: the files its ``split.json``
        lists, at its input size and preprocessing; ``only``: the splits the caller reads."""
        from vitkit.engine import build

        recipe = self.recipe(data_root, overrides)
        run_dir = self.run_dir if self.in_run_dir else None
        view = self.preprocessing if self.data.get("crop_pct") else None
        return build.load_dataset(recipe, self.data["img_size"], device, run_dir=run_dir, only=only, view=view)

    def summary(self) -> dict[str, Any] | None:
        """The run's ``summary.json`` (``None`` before it finished, or for a lone model file)."""
        path = self.run_dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None


def weights_file(path: Path) -> Path:
    """A run directory's best checkpoint (or its model.safetensors), else the file itself."""
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "model.safetensors"):
            if candidate.is_file():
                return candidate
        raise UserError(f"{path}: not a finished run directory (no checkpoints/best.pt or model.safetensors)")
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected a run directory, a .pt checkpoint or a .safetensors file)")
    return path


def open_run(path: str | Path) -> FinishedRun:
    """Open a run directory, a ``.pt`` checkpoint, a ``model.safetensors``, or a folder that ``vitkit export
    --format hf`` wrote (local, or ``hf-hub:org/name`` through the Hugging Face cache)."""
    from vitkit.engine.build import build_model
    from vitkit.evaluation.calibration import temperature_of
    from vitkit.models.pretrained import HUB_PREFIX, hub_folder
    from vitkit.models.timm_bridge import TIMM_WEIGHTS
    from vitkit.plugin_loader import load_run_plugins
    from vitkit.recipe import recipe_from_dict
    from vitkit.runs.checkpoint import load_checkpoint, load_safetensors

    source = weights_file(hub_folder(str(path)) if str(path).startswith(HUB_PREFIX) else Path(path))
    timm_names, state = False, {}  # timm_names: an hf export of a ViT, weights converted on loading
    if source.suffix == ".safetensors":
        weights, meta = load_safetensors(source)
        if "model" not in meta or "data" not in meta:
            raise UserError(f"{source}: no vitkit metadata (model spec and data); was it written by vitkit?")
        recipe_data, spec, data = None, meta["model"], meta["data"]
        plugins, temperature = meta.get("plugins"), temperature_of(meta)
        timm_names = meta.get("weights") == TIMM_WEIGHTS
    else:
        state = load_checkpoint(source)
        if not {"model", "recipe", "data"} <= set(state):
            raise UserError(f"{source}: not a vitkit checkpoint (needs model, recipe and data entries)")
        weights, recipe_data, data = state.pop("model"), state["recipe"], state["data"]
        spec, plugins = recipe_data["model"], recipe_data.get("plugins")
        temperature = temperature_of(state)
    load_run_plugins(plugins, source)  # what the run was trained with: a plugin attention, say
    built = {k: v for k, v in spec.items() if k != "checkpoint_path"}  # its own weights replace the start's
    recipe = recipe_from_dict({"name": "predict", "model": built}, source=source)
    model = build_model(recipe, len(data["classes"]), data["in_chans"], pretrained=False)
    try:
        if timm_names:
            from vitkit.models.timm_bridge import load_weights

            load_weights(model, weights, str(source))
        else:
            model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{source}: weights do not fit the model spec ({str(err).splitlines()[0]})") from None
    return FinishedRun(model.eval(), data, source, spec, recipe_data, temperature, state)

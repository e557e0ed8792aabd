"""``vitkit export RUN --format hf``: a run as timm's Hugging Face Hub folder.

The folder is what timm's ``push_to_hf_hub`` uploads: ``config.json`` (written by timm's own
``save_config_for_hf``: ``architecture``, ``num_classes``, ``num_features``, ``global_pool``,
``label_names``, ``model_args``, ``pretrained_cfg``), ``model.safetensors`` in timm's key names, and a
model card ``README.md``; plus the run's ``recipe.toml``, test report and plots. For models with a timm
twin (the ViT family, ``timm/<name>``) ``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds
the run's model; for the others (plugins, CaiT, CCT, ...) ``config.json`` names vitkit's architecture
and the folder loads with ``vitkit.load(DIR)`` and ``vitkit.create_model("local-dir:DIR")``. Either way
``model.safetensors`` carries vitkit's metadata (model spec, classes, preprocessing, plugins), which is
what vitkit reads it back with.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.errors import UserError
from vitkit.models.timm_bridge import TIMM_WEIGHTS
from vitkit.runs.finished import FinishedRun, open_run

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
#: ``config.json``'s ``architecture`` prefix for models without a timm twin (vitkit's registry name follows).
VITKIT_ARCHITECTURE = "vitkit/"
#: Files of a run directory copied into the folder beside the card (when the run wrote them).
RUN_FILES = ("recipe.toml", "report_test.json", "loss.png", "accuracy.png", "lr.png", "confusion.png")
RUN_FILES += ("misclassified.png", "predictions.png")


@dataclass
class Twin:
    """The timm model that computes what the run's model does, or why there is none."""

    model: nn.Module | None
    why_not: str = ""
    converted: bool = False  # its weights are ``to_timm_state_dict``'s conversion of vitkit's


def timm_twin(loaded: FinishedRun) -> Twin:
    """timm's model of the run: its own (``timm/<name>``) or the ViT that ``to_timm_model`` builds."""
    from vitkit.models.timm_bridge import TIMM_PREFIX, to_timm_model

    if str(loaded.spec.get("name", "")).startswith(TIMM_PREFIX):
        return Twin(loaded.model)
    try:
        return Twin(to_timm_model(loaded.model, via_factory=True).eval(), converted=True)
    except UserError as err:
        return Twin(None, why_not=str(err))


def pretrained_cfg(data: dict[str, Any], architecture: str, num_classes: int) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of the run: its evaluation view in timm's terms
    (``vitkit.data.crops.timm_data_config``: input size, interpolation, crop_pct, crop_mode, mean/std)."""
    from vitkit.data.crops import timm_data_config

    cfg = timm_data_config(data)
    return {"architecture": architecture, **cfg, "fixed_input_size": True, "num_classes": num_classes}


def vitkit_block(loaded: FinishedRun, twin: Twin) -> dict[str, Any]:
    """What ``config.json`` says about vitkit (timm ignores it): the model spec, plugins, who loads it."""
    from vitkit import __version__

    plugins = list((loaded.recipe_data or {}).get("plugins") or [])
    return {"version": __version__, "model": loaded.spec, "plugins": plugins, "timm_loads": twin.model is not None}


def write_config(loaded: FinishedRun, twin: Twin, path: Path) -> dict[str, Any]:
    """``config.json`` as timm writes it (timm's ``save_config_for_hf`` for a twin, its shape otherwise)."""
    classes = list(loaded.data["classes"])
    extra = {"label_names": classes, "vitkit": vitkit_block(loaded, twin)}
    if twin.model is not None:
        from timm.models._hub import save_config_for_hf

        from vitkit.models.timm_bridge import timm_architecture, timm_config

        model = twin.model
        if twin.converted:
            model.pretrained_cfg = pretrained_cfg(loaded.data, timm_architecture(loaded.model), len(classes))
            save_config_for_hf(model, str(path), model_config=extra, model_args=timm_config(loaded.model))
        else:  # timm's own model: its pretrained_cfg, the run's preprocessing on top
            arch = model.pretrained_cfg.get("architecture") or loaded.spec["name"].split("/", 1)[1]
            model.pretrained_cfg = {**model.pretrained_cfg, **pretrained_cfg(loaded.data, arch, len(classes))}
            save_config_for_hf(model, str(path), model_config=extra)
    else:
        model = loaded.model
        args = {k: v for k, v in loaded.spec.items() if k not in ("name", "checkpoint_path", "pretrained")}
        architecture = VITKIT_ARCHITECTURE + loaded.spec["name"]  # never a timm name: timm says it cannot build it
        cfg = pretrained_cfg(loaded.data, architecture, len(classes))
        del cfg["architecture"]  # at the top level, as timm writes it
        config = {
            "architecture": architecture,
            "num_classes": len(classes),
            "num_features": getattr(model, "num_features", None) or getattr(model, "embed_dim", None),
            "global_pool": getattr(model, "global_pool", None),
            "label_names": classes,
            "model_args": {**args, "num_classes": len(classes), "in_chans": loaded.data["in_chans"]},
            "pretrained_cfg": cfg,
            "vitkit": extra["vitkit"],
        }
        path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}, indent=2))
    return json.loads(path.read_text())


def write_weights(loaded: FinishedRun, twin: Twin, path: Path) -> None:
    """``model.safetensors``: timm's key names (the twin's state dict) or vitkit's, with vitkit's metadata."""
    from vitkit.runs.checkpoint import save_safetensors

    metadata = {
        "model": loaded.spec,
        "data": loaded.data,
        "plugins": list((loaded.recipe_data or {}).get("plugins") or []),
        "weights": TIMM_WEIGHTS if twin.converted else "vitkit",
        "temperature": loaded.temperature,  # vitkit.load applies it; timm gives the raw logits
    }
    save_safetensors((twin.model or loaded.model).state_dict(), path, metadata)


@torch.no_grad()
def reload_parity(loaded: FinishedRun, twin: Twin, folder: Path, x: torch.Tensor) -> tuple[float, str]:
    """Largest |logit difference| between the run's model and the folder read back: by timm through
    ``local-dir:`` when it has a twin, else by ``vitkit.load``; and which of the two it was."""
    reference = loaded.model(x).float()
    if twin.model is not None:
        import timm

        back = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        return float((back(x).float() - reference).abs().max()), "timm.create_model('local-dir:...')"
    back = open_run(folder).model
    return float((back(x).float() - reference).abs().max()), "vitkit.load (no timm twin)"


def copy_run_files(run_dir: Path, folder: Path, loaded: FinishedRun) -> list[str]:
    """The run's recipe, test report and plots, copied beside the card; the names copied."""
    from vitkit.recipe import dump_toml

    copied = []
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, folder / name)
            copied.append(name)
    if "recipe.toml" not in copied and loaded.recipe_data is not None:  # a checkpoint outside its run
        (folder / "recipe.toml").write_text(dump_toml(loaded.recipe_data))
        copied.append("recipe.toml")
    return copied


def prepare_folder(folder: Path, force: bool) -> None:
    """An empty (or, with ``force``, replaceable) folder for the export."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; --format hf writes a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UserError(f"{folder} exists and is not empty; pass --force to overwrite it (or --out another folder)")
    folder.mkdir(parents=True, exist_ok=True)


def read_run_json(run_dir: Path, name: str) -> dict[str, Any]:
    path = run_dir / name
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass
class HubExport:
    """What ``write_hf_folder`` wrote and how well the folder reads back."""

    folder: Path
    parity: float
    parity_by: str
    timm_loads: bool
    why_not: str = ""


def write_hf_folder(loaded: FinishedRun, folder: Path, x: torch.Tensor, force: bool = False) -> HubExport:
    """Write the Hub folder of a loaded run into ``folder``; check it reads back on ``x`` (a normalised
    batch of the run's eval view)."""
    from vitkit.commands.export.model_card import model_card

    prepare_folder(folder, force)
    twin = timm_twin(loaded)
    config = write_config(loaded, twin, folder / CONFIG)
    write_weights(loaded, twin, folder / WEIGHTS)
    files = copy_run_files(loaded.run_dir, folder, loaded)
    summary = read_run_json(loaded.run_dir, "summary.json")
    audit = read_run_json(loaded.run_dir / "audit", "audit.json")  # ``vitkit audit RUN``'s, fuller than the run's
    if isinstance(audit.get("leaks"), dict):
        summary = {**summary, "audit": {**(summary.get("audit") or {}), "leaks": audit["leaks"]}}
    report = read_run_json(loaded.run_dir, "report_test.json")
    recipe_text = (folder / "recipe.toml").read_text() if "recipe.toml" in files else ""
    (folder / "README.md").write_text(model_card(loaded, config, twin.why_not, summary, report, recipe_text, files))
    parity, by = reload_parity(loaded, twin, folder, x)
    return HubExport(folder, parity, by, twin.model is not None, twin.why_not)

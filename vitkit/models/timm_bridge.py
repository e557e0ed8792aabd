"""timm interoperability: build vitkit models from vitkit or timm weights, export to timm, and use
any timm model by name as ``timm/<name>``. timm itself is imported only when needed."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.errors import UnknownNameError, UserError
from vitkit.models.factory import accepted_kwargs
from vitkit.models.vit import VisionTransformer
from vitkit.models.weights import adapt_to_model, from_timm_layout, infer_vit_options, load_state, read_weights
from vitkit.registry import MODELS

TIMM_PREFIX = "timm/"
#: ``model.safetensors`` metadata key ``weights``: its tensors are under timm's names (``to_timm_state_dict``).
TIMM_WEIGHTS = "timm"


def create_model(name: str, checkpoint_path: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build model ``name``; with ``checkpoint_path``, load its weights; with ``pretrained=True`` (or an
    ``"hf-hub:org/name"`` id) and no file, timm's pretrained weights (see ``vitkit.models.pretrained``).

    The file may be a vitkit checkpoint (``best.pt``), a vitkit ``model.safetensors`` (both carry the
    model options they were trained with, used unless ``overrides`` say otherwise) or a timm state
    dict (``.pth``, ``.bin``, ``.safetensors``), whose layout is converted and whose implied options
    (class token, register tokens, LayerScale, fc_norm, ...) are set. Learned position embeddings are
    resized when the patch grid differs; passing a different ``num_classes`` keeps a fresh head.
    Any other mismatch is a ``UserError`` naming keys and shapes.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    pretrained = overrides.pop("pretrained", False)
    if checkpoint_path is None:
        if pretrained and name.startswith(TIMM_PREFIX):
            return MODELS.create(name, pretrained=pretrained, **overrides)
        model = MODELS.create(name, **overrides)
        if pretrained:
            from vitkit.models.pretrained import wants_pretrained

            if wants_pretrained(pretrained):
                load_pretrained(model, name, pretrained)
        return model
    state, meta = read_weights(checkpoint_path)
    native = name.startswith(TIMM_PREFIX)  # timm's own model: its own layout, nothing to convert
    if meta["format"] == "vitkit":
        from vitkit.plugin_loader import load_run_plugins

        load_run_plugins(meta.get("plugins"), checkpoint_path)  # the plugins it was trained with
        spec = dict(meta.get("model") or {})
        inferred = {k: v for k, v in spec.items() if k not in ("name", "checkpoint_path")}
        data = meta.get("data") or {}
        if "classes" in data:
            inferred["num_classes"] = len(data["classes"])
        if "in_chans" in data:
            inferred["in_chans"] = data["in_chans"]
    elif native:
        inferred = {}
        for key in ("head.weight", "fc.weight", "head.fc.weight", "classifier.weight"):
            if key in state and state[key].ndim == 2:
                inferred["num_classes"] = state[key].shape[0]
                break
    else:
        state = from_timm_layout(state)
        inferred = infer_vit_options(state)
    accepted = accepted_kwargs(name) if not native else None
    options = {k: v for k, v in inferred.items() if accepted is None or k in accepted}
    reset_head = "num_classes" in overrides and overrides["num_classes"] != options.get("num_classes")
    model = MODELS.create(name, **{**options, **overrides})
    load_weights(model, state, str(checkpoint_path), reset_head=reset_head, convert=not native, model_name=name)
    return model


def load_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor] | str | Path,
    source: str = "",
    reset_head: bool = False,
    convert: bool = True,
    model_name: str = "",
) -> nn.Module:
    """Load a state dict (or a weights file) into an existing model; returns the model.

    ``convert`` turns timm layouts into vitkit's and resizes position embeddings (off for models
    that are timm's own). Used for ``model.checkpoint_path`` in recipes.
    """
    if not isinstance(state, dict):
        source = source or str(state)
        state, _ = read_weights(state)
    if convert:
        state = adapt_to_model(from_timm_layout(state), model, source)
    load_state(model, state, source or "state dict", reset_head=reset_head, model_name=model_name)
    return model


# ------------------------------------------------------------------------------------- to timm


def _require_vit(model: nn.Module) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise UserError(f"{type(model).__name__} has no timm equivalent (only the ViT family converts)")
    if model.pos_embed_kind not in ("learn", "sincos", "none") or model.mlp_kind != "mlp":
        raise UserError(
            f"pos_embed {model.pos_embed_kind!r} with mlp {model.mlp_kind!r} has no timm VisionTransformer "
            "equivalent (timm's ViT: pos_embed learn, sincos or none, mlp 'mlp')"
        )
    return model


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under timm's ViT keys. A fixed sin-cos table becomes a ``pos_embed``
    (zero rows for embedded prefix tokens), so a timm model built from ``timm_config`` computes the
    same function."""
    vit = _require_vit(model)
    state = {k: v.detach().clone() for k, v in vit.state_dict().items()}
    if vit.pos_embed_kind == "sincos":
        table = vit.pos_embed.detach().float()
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        state["pos_embed"] = torch.cat([table.new_zeros(1, prefix, table.shape[-1]), table], dim=1)
    return state


def timm_config(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments for timm's ``VisionTransformer`` (or ``VisionTransformerDistilled``) that
    give the same architecture as ``model``; unsupported options are a ``UserError``."""
    vit = _require_vit(model)
    attn = vit.blocks[0].attn if len(vit.blocks) else None
    if attn is not None and type(attn).__name__ != "SoftmaxAttention":
        raise UserError(f"{type(attn).__name__} attention has no timm equivalent (timm's ViT uses softmax)")
    if not isinstance(vit.patch_embed.norm, nn.Identity) or type(vit.patch_embed).__name__ != "PatchEmbed":
        raise UserError("this patch embedding (patch_norm or a custom tokenizer) has no timm ViT equivalent")
    return {
        "img_size": vit.img_size,
        "patch_size": vit.patch_size,
        "in_chans": vit.in_chans,
        "num_classes": vit.num_classes,
        "embed_dim": vit.embed_dim,
        "depth": vit.depth,
        "num_heads": vit.num_heads,
        "mlp_ratio": vit.mlp_ratio,
        "qkv_bias": vit.qkv_bias,
        "qk_norm": vit.qk_norm,
        "init_values": vit.init_values,
        "class_token": vit.cls_token is not None,
        "global_pool": vit.global_pool,
        "reg_tokens": vit.num_reg_tokens,
        "no_embed_class": vit.no_embed_class,
        "pre_norm": vit.pre_norm,
        "fc_norm": vit.use_fc_norm,
        "pos_embed": "none" if vit.pos_embed_kind == "none" else "learn",
    }


#: timm's registered names that build ``model``'s classes; ``timm_config`` sets every size, so any name of
#: the right class builds the same network (these are what an hf export's ``config.json`` names).
TIMM_ARCHITECTURES = {"vit": "vit_base_patch16_224", "deit_distilled": "deit_base_distilled_patch16_224"}


def timm_architecture(model: nn.Module) -> str:
    """The timm model name (``vit_*``, or ``deit_*_distilled_*`` for DeiT) that ``timm.create_model``
    builds ``model``'s architecture from, given ``timm_config(model)`` as arguments."""
    _require_vit(model)
    return TIMM_ARCHITECTURES["deit_distilled" if hasattr(model, "dist_token") else "vit"]


def to_timm_model(model: nn.Module, via_factory: bool = False, **overrides: Any) -> nn.Module:
    """A timm ``VisionTransformer`` (``VisionTransformerDistilled`` for DeiT) holding ``model``'s weights;
    ``overrides`` are further timm arguments that hold no weights (dropout rates). ``via_factory``:
    built by ``timm.create_model(timm_architecture(model), ...)``, so it carries the ``pretrained_cfg``
    and recorded arguments timm's ``save_for_hf`` writes."""
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    config = {**timm_config(model), **overrides}
    if via_factory:
        import timm

        reference = timm.create_model(timm_architecture(model), pretrained=False, **config)
    else:
        cls = VisionTransformerDistilled if hasattr(model, "dist_token") else TimmViT
        reference = cls(**config)
    state = to_timm_state_dict(model)
    if config["pre_norm"]:
        state.pop("patch_embed.proj.bias")  # timm drops this bias under pre_norm; ours stays zero
    reference.load_state_dict(state)
    return reference


# ------------------------------------------------------------------------------- timm/<name>


def timm_factory(name: str) -> Any:
    """The factory behind ``timm/<name>``: timm's model, randomly initialised (never downloads)."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(TIMM_PREFIX + c) for c in close)}?)" if close else ""
        raise UnknownNameError(f"unknown timm model {name!r}{hint}; see timm.list_models()")
    cfg = timm.models.get_pretrained_cfg(name)
    default_size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    default_classes = int(cfg.num_classes) if cfg is not None and cfg.num_classes else 1000

    def factory(
        *,
        img_size: int = default_size,
        num_classes: int = default_classes,
        in_chans: int = 3,
        pretrained: bool | str = False,
        **kwargs: Any,
    ) -> nn.Module:
        from vitkit.models.pretrained import create_timm_pretrained, timm_source, wants_pretrained

        build = timm.create_model
        source = name
        if wants_pretrained(pretrained):  # via huggingface_hub and its cache (HF_HUB_OFFLINE honoured)
            build, source = create_timm_pretrained, timm_source(TIMM_PREFIX + name, pretrained)
        common = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
        if build is timm.create_model:
            common["pretrained"] = False
        try:
            return build(source, img_size=img_size, **common)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
        return build(source, **common)  # size-agnostic models (CNNs) take no img_size

    factory.__name__ = f"timm_{name}"
    factory.__doc__ = f"timm's {name}: random weights, timm's pretrained ones (pretrained), or checkpoint_path's."
    factory.__signature__ = inspect.signature(factory)  # type: ignore[attr-defined]
    return factory


MODELS.add_resolver(TIMM_PREFIX, timm_factory)


def load_pretrained(model: nn.Module, name: str, pretrained: Any) -> nn.Module:
    """Load timm's pretrained weights for ``name`` into the vitkit ``model`` (converted, positions
    resized, head reset when the classes differ); sets ``model.pretrained_cfg``."""
    from vitkit.models.pretrained import (
        create_timm_pretrained,
        hub_folder,
        is_vitkit_export,
        pretrained_cfg,
        timm_source,
    )
    from vitkit.models.vit import VisionTransformer

    if isinstance(pretrained, str) and is_vitkit_export(pretrained):  # vitkit's own hf export: any architecture
        folder = hub_folder(pretrained, what="set model.checkpoint_path to a local weights file")
        state, _ = read_weights(folder / "model.safetensors")
        load_weights(model, state, f"pretrained {pretrained}", reset_head=True, convert=True)
        model.pretrained_cfg = pretrained_cfg(name, pretrained) or {}
        return model
    if not isinstance(model, VisionTransformer):
        raise UserError(
            f"timm's pretrained weights convert into vitkit's ViT and DeiT configs only, not {type(model).__name__}; "
            f"use model.name = 'timm/{name}' with pretrained = true"
        )
    source = timm_source(name, pretrained)
    reference = create_timm_pretrained(source)
    load_weights(model, reference.state_dict(), f"pretrained {source}", reset_head=True, convert=True)
    model.pretrained_cfg = dict(getattr(reference, "pretrained_cfg", {}) or {})
    return model


# ---------------------------------------------------------------------- local-dir:PATH, hf-hub:org/name


def export_folder_factory(folder: Path) -> Any:
    """The factory of the model in a folder ``vitkit export --format hf`` wrote: the run's architecture
    with its weights (converted from timm's names where they are); overrides as ``create_model``'s."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder}: no model.safetensors (expected a folder written by vitkit export --format hf)")
    _, meta = read_weights(weights)
    if meta["format"] != "vitkit":
        raise UserError(
            f"{weights} has no vitkit metadata (not a vitkit export); timm.create_model('local-dir:...') may load it"
        )

    def factory(**overrides: Any) -> nn.Module:
        return create_model(meta["model"]["name"], checkpoint_path=weights, **overrides)

    factory.__doc__ = f"the model exported to {folder}"
    return factory


def _local_dir(path: str) -> Any:
    return export_folder_factory(Path(path).expanduser())


def _hf_hub(repo: str) -> Any:
    from vitkit.models.pretrained import HUB_PREFIX, hub_folder

    return export_folder_factory(hub_folder(HUB_PREFIX + repo))


MODELS.add_resolver("local-dir:", _local_dir)
MODELS.add_resolver("hf-hub:", _hf_hub)

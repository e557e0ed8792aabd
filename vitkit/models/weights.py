"""Weights in: read vitkit or timm files, convert timm layouts, resize positions, load with checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.errors import UserError

HEAD_KEYS = (
    "head.weight",
    "head.bias",
    "head_dist.weight",
    "head_dist.bias",
    "fc.weight",
    "fc.bias",
    "head.fc.weight",
    "head.fc.bias",
    "classifier.weight",
    "classifier.bias",
)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` from a vitkit checkpoint (``.pt`` with ``"model"``), a vitkit
    ``model.safetensors``, or a bare timm/torch state dict (``.pth``, ``.bin``, ``.safetensors``).

    ``meta`` holds ``format`` (``vitkit`` or ``state_dict``) and, for vitkit files, the recipe's
    ``model`` spec, the ``data`` description and the ``plugins`` its recipe named. Files load with
    ``weights_only=True``.
    """
    from vitkit.runs.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint_path {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        if isinstance(meta.get("model"), dict):
            plugins = meta.get("plugins") or []
            return state, {"format": "vitkit", "model": meta["model"], "data": meta.get("data"), "plugins": plugins}
        return state, {"format": "state_dict"}
    loaded = load_checkpoint(path)
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a state dict or a checkpoint dict, got {type(loaded).__name__}")
    if isinstance(loaded.get("model"), dict):  # vitkit's checkpoints (best.pt, last.pt)
        spec, plugins = loaded.get("recipe", {}).get("model"), loaded.get("recipe", {}).get("plugins") or []
        return loaded["model"], {"format": "vitkit", "model": spec, "data": loaded.get("data"), "plugins": plugins}
    for key in ("state_dict_ema", "state_dict", "model_state_dict"):  # timm's train.py and common trainers
        if isinstance(loaded.get(key), dict):
            return loaded[key], {"format": "state_dict"}
    if not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(f"{path}: not a state dict (keys {sorted(loaded)[:5]} are not all tensors)")
    return loaded, {"format": "state_dict"}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata (JSON values decoded where they are JSON, e.g. vitkit's)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return state, meta


def from_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and fuse timm/torch layouts into vitkit's (which is timm's current ViT layout).

    Strips ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes; fuses separate
    ``attn.q/k/v`` projections of the ViT blocks (``blocks.N``) into ``attn.qkv`` (class-attention
    blocks keep theirs: CaiT's ``blocks_token_only`` in timm and vitkit); turns BEiT-style
    ``attn.q_bias``/``attn.v_bias`` into a ``qkv.bias`` with a zero key bias.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    for key in [k for k in out if k.startswith("blocks.") and k.endswith(".attn.q.weight")]:
        stem = key.removesuffix("q.weight")
        if f"{stem}k.weight" in out and f"{stem}v.weight" in out:
            out[f"{stem}qkv.weight"] = torch.cat([out.pop(f"{stem}{p}.weight") for p in "qkv"])
            if f"{stem}q.bias" in out:
                out[f"{stem}qkv.bias"] = torch.cat([out.pop(f"{stem}{p}.bias") for p in "qkv"])
    for key in [k for k in out if k.endswith(".attn.q_bias")]:
        stem = key.removesuffix("q_bias")
        q_bias, v_bias = out.pop(key), out.pop(f"{stem}v_bias")
        out[f"{stem}qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    return out


def infer_vit_options(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ViT options a timm state dict implies by its keys (sizes are not guessed: a mismatch errors)."""
    options: dict[str, Any] = {}
    has_cls = "cls_token" in state
    prefix = int(has_cls) + int("dist_token" in state)
    if not has_cls:
        options.update(class_token=False, global_pool="avg")
    if "fc_norm.weight" in state:
        options.update(fc_norm=True, global_pool="avg")
    elif options.get("global_pool") == "avg":
        options["fc_norm"] = False  # LayerNorm before pooling (``norm``), as the state holds
    if "reg_token" in state:
        options["reg_tokens"] = state["reg_token"].shape[1]
        prefix += options["reg_tokens"]
    if "pos_embed" in state and prefix:
        n = state["pos_embed"].shape[1]
        if _is_square(n) and not _is_square(n - prefix):
            options["no_embed_class"] = True
    if "blocks.0.ls1.gamma" in state:
        options["init_values"] = 1e-5  # a placeholder: the loaded gammas replace it
    if "blocks.0.attn.q_norm.weight" in state:
        options["qk_norm"] = True
    if "norm_pre.weight" in state:
        options["pre_norm"] = True
    if "blocks.0.attn.qkv.weight" in state and "blocks.0.attn.qkv.bias" not in state:
        options["qkv_bias"] = False
    if "head.weight" in state:
        options["num_classes"] = state["head.weight"].shape[0]
    elif "norm.weight" in state or "fc_norm.weight" in state:
        options["num_classes"] = 0  # a headless (feature) checkpoint
    if "patch_embed.proj.weight" in state:
        options["in_chans"] = state["patch_embed.proj.weight"].shape[1]
    return options


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def resample_pos_embed(pos_embed: torch.Tensor, grid_size: int, num_prefix_tokens: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of a ``(1, prefix + g*g, dim)`` table to ``grid_size``; the prefix
    tokens' rows are kept as they are (timm's ``resample_abs_pos_embed``)."""
    from timm.layers import resample_abs_pos_embed

    positions = pos_embed.shape[1] - num_prefix_tokens
    old = math.isqrt(positions)
    if old * old != positions:
        raise UserError(
            f"pos_embed has {positions} patch positions after {num_prefix_tokens} prefix tokens: not a square grid"
        )
    if old == grid_size:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, [grid_size, grid_size], [old, old], num_prefix_tokens=num_prefix_tokens)


def _embedded_prefix(model: nn.Module) -> int:
    if getattr(model, "no_embed_class", False):
        return 0
    return getattr(model, "num_prefix_tokens", 0)


def adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A patch projection ``(dim, C, p, p)`` for ``in_chans`` input channels: summed to one channel
    (grey images see the RGB filters' total response), else cycled and rescaled (timm's ``adapt_input_conv``)."""
    from timm.models import adapt_input_conv

    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] == 3:  # RGB weights: every timm 1.0
        return adapt_input_conv(in_chans, weight)
    return adapt_input_conv(in_chans, weight, base_chans=weight.shape[1])  # other sources: newer timm


def adapt_to_model(state: dict[str, torch.Tensor], model: nn.Module, source: str = "") -> dict[str, torch.Tensor]:
    """Make a (converted) state dict fit ``model``: resize learned positions to the model's grid,
    adapt the patch projection to the model's input channels, drop a checkpoint's copy of a fixed
    sin-cos table, and add the zero patch-embedding bias that timm leaves out with ``pre_norm``."""
    state = dict(state)
    target = model.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in target and pos.shape != target["pos_embed"].shape:
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is not None and pos.shape[-1] == target["pos_embed"].shape[-1]:
            state["pos_embed"] = resample_pos_embed(pos, grid, _embedded_prefix(model))
    if pos is not None and "pos_embed" not in target and getattr(model, "pos_embed_kind", None) == "sincos":
        table = model.pos_embed
        rows = pos[:, pos.shape[1] - table.shape[1] :]
        if rows.shape == table.shape and torch.allclose(rows.float(), table.float(), atol=1e-5):
            del state["pos_embed"]  # the fixed table, exported by to_timm_state_dict
        else:
            raise UserError(
                f"{source or 'the checkpoint'} has learned position embeddings (pos_embed) but the model uses "
                "fixed sin-cos ones; create it with pos_embed='learn'"
            )
    weight = "patch_embed.proj.weight"
    if weight in state and weight in target and state[weight].shape[1] != target[weight].shape[1]:
        state[weight] = adapt_input_channels(state[weight], target[weight].shape[1])
    bias = "patch_embed.proj.bias"
    if bias in target and bias not in state and "patch_embed.proj.weight" in state:
        state[bias] = torch.zeros_like(target[bias])
    return state


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, reset_head: bool = False, model_name: str = ""
) -> None:
    """Load ``state`` into ``model`` strictly; any missing, unexpected or misshapen key is a
    ``UserError`` naming keys and shapes. ``reset_head`` keeps the model's fresh classifier head
    when the checkpoint's head is for another number of classes."""
    target = model.state_dict()
    mismatched = [k for k in state.keys() & target.keys() if state[k].shape != target[k].shape]
    if reset_head and mismatched and set(mismatched) <= set(HEAD_KEYS):
        state = {k: v for k, v in state.items() if k not in mismatched}
        state.update({k: target[k] for k in mismatched})
        from vitkit.engine.console import console

        console.print(f"{source}: classifier head left freshly initialised (checkpoint's is for other classes)")
        mismatched = []
    missing = sorted(target.keys() - state.keys())
    unexpected = sorted(state.keys() - target.keys())
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append(
                "shape mismatch: "
                + ", ".join(
                    f"{k} {tuple(state[k].shape)} in checkpoint vs {tuple(target[k].shape)} in model"
                    for k in sorted(mismatched)[:4]
                )
                + _more(mismatched)
            )
        if missing:
            problems.append("missing keys: " + ", ".join(missing[:4]) + _more(missing))
        if unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected[:4]) + _more(unexpected))
        target_name = model_name or type(model).__name__
        raise UserError(f"{source} does not fit model {target_name}: " + "; ".join(problems))
    model.load_state_dict(state)


def _more(keys: list[str]) -> str:
    return f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""

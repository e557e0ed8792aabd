"""A single-file vitkit plugin: ReLU attention, registered as ``relu``.

Name this file in a recipe (paths are relative to the recipe file) and use the attention:

    plugins = ["../plugins/my_attention.py"]
    [model]
    attention = "relu"

or pass it on the command line: ``vitkit run recipes/digits.toml --plugin plugins/my_attention.py
--set model.attention=relu``. See recipes/digits_custom_attention.toml and docs/plugins.md.
``vitkit.Attention`` does the rest (qkv, heads, dropouts, projection, ``attention_map``).
"""

import torch

import vitkit


@vitkit.register_attention("relu")
class ReluAttention(vitkit.Attention):
    """ReLU attention: relu(q k^T / sqrt(d)) / N in place of softmax (Wortsman et al. 2023)."""

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.relu(q @ k.transpose(-2, -1) * self.scale) / k.shape[2]  # divided by N

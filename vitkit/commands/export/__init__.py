"""``vitkit export`` and ``vitkit push``: ``cli``, ``formats`` (safetensors, TorchScript, ONNX, int8, pruning),
``hub_folder`` and ``model_card`` (``--format hf``: timm's Hub folder), ``push`` (upload it)."""

"""``model.pretrained``: timm's pretrained weights through huggingface_hub, never the network in tests: a
Hugging Face cache in tmp_path that the test fills (HF_HUB_OFFLINE=1), a local weights file, and the
one-line error when neither has the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT
from .photos import folder_recipe, tiny_folder

TIMM_NAME = "vit_tiny_patch16_224"


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(cache.parent / "hf_home"),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
    }


def _timm_reference() -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def fill_cache(cache: Path) -> dict[str, torch.Tensor]:
    """Put a timm ViT-Ti/16 state dict where huggingface_hub looks for timm's default pretrained tag."""
    import timm
    from safetensors.torch import save_file

    repo_id = timm.models.get_pretrained_cfg(TIMM_NAME).hf_hub_id
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    state = _timm_reference()
    save_file(state, snapshot / "model.safetensors")
    return state


def _run(args: list[str], cache: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *args],
        env={**_env(cache), **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )


PRETRAINED = [
    "--set",
    "model.name='vit_tiny_patch16_224'",
    "--set",
    "model.img_size=32",
    "--set",
    "model.pretrained=true",
]


def test_pretrained_from_a_filled_cache_trains_and_python_api_loads_it(tmp_path):
    """``vitkit run`` (``vitkit.cli.main``) then the Python API, in one fresh process with HF_HUB_OFFLINE=1
    set before anything is imported: each loads the weights from the cache on its own."""
    cache = tmp_path / "hub"
    state = fill_cache(cache)
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    text = recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', "")
    recipe.write_text(text)
    torch.save(state, tmp_path / "ref.pt")
    code = """
import sys, torch, vitkit
from vitkit.cli import main
assert main(sys.argv[1:]) == 0
ref = torch.load('REF', weights_only=True)
m = vitkit.create_model('vit_tiny_patch16_224', pretrained=True, num_classes=3, img_size=32)
t = vitkit.create_model('timm/vit_tiny_patch16_224', pretrained=True, num_classes=3, img_size=32)
for model in (m, t):
    assert torch.equal(model.blocks[1].mlp.fc1.weight, ref['blocks.1.mlp.fc1.weight'])
    assert model.pos_embed.shape == (1, 5, 192) and model.head.weight.shape == (3, 192)
print('api ok')
"""
    done = subprocess.run(
        [sys.executable, "-c", code.replace("REF", str(tmp_path / "ref.pt")), "run", str(recipe), *PRETRAINED],
        env=_env(cache), capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("api ok"), done.stdout[-2000:] + done.stderr
    assert "classifier head left freshly initialised" in done.stdout
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    meta = json.loads((run_dir / "summary.json").read_text())
    assert meta["epochs_run"] == 1
    saved = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert saved["data"]["mean"] == [0.5, 0.5, 0.5] and saved["data"]["crop_pct"] == 0.9  # timm's config for it
    assert saved["data"]["interpolation"] == "bicubic"


def test_pretrained_offline_without_the_file_is_one_line_naming_it(tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    recipe.write_text(recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', ""))
    done = _run(["run", str(recipe), *PRETRAINED], tmp_path / "empty_hub", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k (model.safetensors)" in done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr and "model.checkpoint_path" in done.stderr


def test_pretrained_with_a_local_weights_file_needs_no_cache(tmp_path):
    from safetensors.torch import save_file

    save_file(_timm_reference(), tmp_path / "vit_tiny.safetensors")
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    recipe.write_text(recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', ""))
    local = ["--set", f"model.checkpoint_path='{tmp_path / 'vit_tiny.safetensors'}'"]
    done = _run(["run", str(recipe), *PRETRAINED, *local], tmp_path / "empty_hub", tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    saved = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert saved["data"]["mean"] == [0.5, 0.5, 0.5] and saved["data"]["crop_pct"] == 0.9
    assert not (tmp_path / "empty_hub").exists() or not any((tmp_path / "empty_hub").rglob("*.safetensors"))


@pytest.mark.parametrize("value", ["yes", 1])
def test_bad_pretrained_values_are_user_errors(cli, tmp_path, value):
    root = tiny_folder(tmp_path / "photos", per_class=4)
    code, _, err = cli("run", folder_recipe(tmp_path, root), "--set", f"model.pretrained={value!r}".replace("'", '"'))
    assert code == 2 and "model.pretrained" in err and err.count("\n") == 1


def _unreachable_hub() -> dict[str, str]:
    """A machine without internet, as the user had it: HF_HUB_OFFLINE unset, the hub (here a port on 127.0.0.1
    where nothing listens) unreachable, no proxy."""
    from .test_quickstart_network import closed_port_url

    return {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": closed_port_url(),
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        "ALL_PROXY": "",
    }


def test_i23_9_an_unreachable_hub_fails_a_pretrained_recipe_at_once_in_one_line(tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    recipe.write_text(recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', ""))
    done = _run(["run", str(recipe), *PRETRAINED], tmp_path / "empty_hub", tmp_path, **_unreachable_hub())
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "Retrying" not in done.stderr + done.stdout  # huggingface_hub's backoff: ~50 s before the fix
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k (model.safetensors)" in line  # what was looked for
    assert f"not in the Hugging Face cache {tmp_path / 'empty_hub'}" in line  # where
    assert "is unreachable" in line and "model.checkpoint_path" in line  # why, and how to supply it


def test_i23_9_going_offline_still_loads_cached_weights(tmp_path):
    cache = tmp_path / "hub"
    fill_cache(cache)
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    recipe.write_text(recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', ""))
    done = _run(["run", str(recipe), *PRETRAINED], cache, tmp_path, **_unreachable_hub())
    assert done.returncode == 0, done.stderr
    assert "Retrying" not in done.stderr + done.stdout
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 1

"""Issue #25 parts 1 and 2: ``vitkit export --format hf`` (timm's Hub folder with a model card) and
``vitkit push``, read back by timm (``local-dir:``, ``hf-hub:``) and by vitkit through a Hugging Face
cache the tests fill (``HF_HUB_OFFLINE=1``); never the network."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli import main

from .conftest import ROOT
from .photos import folder_recipe, tiny_folder

REPO = "someone/tiny-photos"


def _vitkit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return tiny_folder(tmp_path_factory.mktemp("photos") / "photos", per_class=8)


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, photos) -> Path:
    """A 1-epoch imagefolder run of a ViT (timm has its twin): crop_pct, bicubic-or-bilinear eval view."""
    tmp = tmp_path_factory.mktemp("photo_run")
    assert main(["run", str(folder_recipe(tmp, photos))]) == 0
    (run,) = (tmp / "runs" / "photos").iterdir()
    return run


@pytest.fixture(scope="module")
def cait_run(tmp_path_factory, photos) -> Path:
    """A 1-epoch imagefolder run of a CaiT (no timm twin in vitkit's bridge)."""
    tmp = tmp_path_factory.mktemp("cait_run")
    recipe = folder_recipe(tmp, photos)
    recipe.write_text(
        recipe.read_text().replace('name = "vit_nano_patch4_16"\ndepth = 1', 'name = "cait_nano_patch4_16"')
    )
    assert main(["run", str(recipe)]) == 0
    (run,) = (tmp / "runs" / "photos").iterdir()
    return run


@pytest.fixture(scope="module")
def photo_hf(photo_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "hf"
    done = _vitkit("export", photo_run, "--format", "hf", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "max |logit diff|" in done.stdout and "local-dir" in done.stdout
    return out


def _eval_batch(predictor, photos: Path) -> torch.Tensor:
    """The run's eval view of the photos (vitkit's one preprocessing path), normalised: the model input."""
    files = sorted(photos.rglob("*.jpg"))[:12]
    return predictor.to_input([predictor.view(path) for path in files])


# ------------------------------------------------------------------------------------------- part 1


def test_i25_1_hf_folder_loads_in_timm_with_the_run_logits(photo_run, photo_hf, photos):
    import timm
    from safetensors import safe_open

    config = json.loads((photo_hf / "config.json").read_text())
    predictor = vitkit.load(photo_run, device="cpu")
    assert {"architecture", "num_classes", "num_features", "global_pool", "label_names", "pretrained_cfg"} <= set(
        config
    )
    assert config["label_names"] == predictor.classes and config["num_classes"] == len(predictor.classes)
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, predictor.img_size, predictor.img_size]
    assert cfg["crop_pct"] == pytest.approx(predictor.crop_pct) and cfg["interpolation"] == predictor.interpolation
    assert cfg["mean"] == pytest.approx(predictor.data["mean"]) and cfg["std"] == pytest.approx(predictor.data["std"])
    assert config["model_args"]["depth"] == 1 and config["model_args"]["embed_dim"] == 64

    model = timm.create_model(f"local-dir:{photo_hf}", pretrained=True).eval()
    with safe_open(str(photo_hf / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())  # timm's key names
    assert model.pretrained_cfg["label_names"] == predictor.classes
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["crop_pct"] == pytest.approx(predictor.crop_pct) and data_cfg["input_size"] == tuple(
        cfg["input_size"]
    )

    x = _eval_batch(predictor, photos)
    with torch.no_grad():
        diff = float((model(x) - predictor.model(x)).abs().max())
    print(f"max |logit diff| timm local-dir vs vitkit.load(run): {diff:.2e}")
    assert diff <= 1e-5
    for name in ("README.md", "recipe.toml", "report_test.json", "confusion.png", "loss.png"):
        assert (photo_hf / name).is_file(), name


def test_i25_1_card_names_the_classes_the_data_and_the_test_accuracy(photo_run, photo_hf):
    card = (photo_hf / "README.md").read_text()
    summary = json.loads((photo_run / "summary.json").read_text())
    report = json.loads((photo_run / "report_test.json").read_text())
    assert card.startswith("---\n") and "pipeline_tag: image-classification" in card and "library_name: timm" in card
    for name in json.loads((photo_hf / "config.json").read_text())["label_names"]:
        assert f"`{name}`" in card and f"| {name} |" in card  # named, with its split counts and report row
    assert f"**Test accuracy:** {report['acc']:.2%} on {report['count']} held-out test images" in card
    sizes = summary["split_sizes"]
    assert f"train {sizes['train']}, val {sizes['val']}, test {sizes['test']}" in card
    assert (photo_run / "recipe.toml").read_text().strip() in card
    assert 'timm.create_model("hf-hub:ORG/NAME", pretrained=True)' in card and 'vitkit.load("hf-hub:ORG/NAME")' in card
    assert "## Intended use and limits" in card


def test_i25_1_model_without_timm_twin_loads_with_vitkit_and_card_says_so(cait_run, tmp_path):
    import timm

    out = tmp_path / "hf"
    done = _vitkit("export", cait_run, "--format", "hf", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "timm cannot load this folder" in done.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vitkit/cait_nano_patch4_16" and config["vitkit"]["timm_loads"] is False
    assert "timm cannot build this model" in (out / "README.md").read_text()
    assert "library_name: vitkit" in (out / "README.md").read_text()
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model(f"local-dir:{out}", pretrained=True)

    reference = vitkit.load(cait_run, device="cpu")
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        expected = reference.model(x)
        assert torch.equal(vitkit.load(out, device="cpu").model(x), expected)
        assert torch.equal(vitkit.create_model(f"local-dir:{out}").eval()(x), expected)


def test_i25_1_export_hf_keeps_a_non_empty_folder_without_force(photo_run, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    done = _vitkit("export", photo_run, "--format", "hf", "--out", out)
    assert done.returncode == 2 and "--force" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (out / "mine.txt").read_text() == "keep" and not (out / "config.json").exists()


def test_i25_1_export_hf_takes_no_quantize_or_prune(photo_run, tmp_path, cli):
    code, _, err = cli("export", photo_run, "--format", "hf", "--out", tmp_path / "hf", "--quantize", "int8")
    assert code == 2 and "--quantize" in err and not (tmp_path / "hf").exists()


# ------------------------------------------------------------------------------------------- part 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_i25_2_push_offline_without_token_or_network_is_one_line_exit_2(photo_run, photo_hf, tmp_path):
    home = {"HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": ""}  # no stored login either
    cases = {
        "HF_HUB_OFFLINE is set": {**home, "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "1"},
        "no Hugging Face token": {**home, "HF_HUB_OFFLINE": "0"},
        "cannot reach the Hugging Face Hub": {
            **home,
            "HF_TOKEN": "hf_test",
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",  # nothing listens: no network
        },
    }
    for line, env in cases.items():  # the run, or (no network: its upload fails last) the folder exported
        done = _vitkit("push", photo_hf if "reach" in line else photo_run, REPO, env=env)
        assert done.returncode == 2, (line, done.stderr)
        assert done.stderr.startswith("vitkit: error: ") and line in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    done = _vitkit("push", photo_run, "not a repo!", env={**home, "HF_TOKEN": "hf_test"})
    assert done.returncode == 2 and "not a Hugging Face repo id" in done.stderr


def test_i25_2_push_uploads_the_hf_folder_with_the_repo_in_its_card(photo_run, photo_hf, tmp_path, monkeypatch, cli):
    from huggingface_hub import HfApi

    calls = {}

    class Repo:
        repo_id = REPO

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)
        return Repo()

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, sorted(p.name for p in folder.iterdir()), commit_message)
        calls["card"] = (folder / "README.md").read_text()
        return type("Commit", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    code, out, err = cli("push", photo_hf, REPO, "--private", "--message", "first model")
    assert code == 0, err
    assert calls["create"] == (REPO, {"private": True, "exist_ok": True, "repo_type": "model"})
    repo_id, names, message = calls["upload"]
    assert repo_id == REPO and message == "first model"
    assert {"config.json", "model.safetensors", "README.md", "recipe.toml"} <= set(names)
    assert f'vitkit.load("hf-hub:{REPO}")' in calls["card"] and "ORG/NAME" not in calls["card"]
    assert "ORG/NAME" in (photo_hf / "README.md").read_text()  # the export itself is left as it was
    assert f"https://hub.invalid/{REPO}/commit/1" in out


def fill_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay out ``folder`` as huggingface_hub's cache holds a downloaded snapshot of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    for name in ("config.json", "model.safetensors", "README.md"):
        shutil.copy2(folder / name, snapshot / name)


READ_BACK = """
import torch, timm, vitkit
run = vitkit.load(RUN, device="cpu")
hub = vitkit.load("hf-hub:REPO", device="cpu")
files = sorted(__import__("pathlib").Path(PHOTOS).rglob("*.jpg"))[:9]
assert [p.topk for p in hub.predict(files)] == [p.topk for p in run.predict(files)]
x = run.to_input([run.view(f) for f in files])
with torch.no_grad():
    t = timm.create_model("hf-hub:REPO", pretrained=True).eval()
    print("timm hf-hub diff", float((t(x) - run.model(x)).abs().max()))
    assert float((t(x) - run.model(x)).abs().max()) <= 1e-5
    m = vitkit.create_model("vit_nano_patch4_16", depth=1, in_chans=3, num_classes=3, img_size=16,
                            pretrained="hf-hub:REPO").eval()
    assert float((m(x) - run.model(x)).abs().max()) <= 1e-5
    c = vitkit.create_model("hf-hub:REPO").eval()
    assert float((c(x) - run.model(x)).abs().max()) <= 1e-5
print("ok")
"""


@pytest.mark.slow
def test_i25_2_hf_hub_reads_back_through_the_cache(photo_run, photo_hf, photos, tmp_path):
    cache = tmp_path / "hub"
    fill_cache(cache, REPO, photo_hf)
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    code = READ_BACK.replace("REPO", REPO).replace("RUN", repr(str(photo_run))).replace("PHOTOS", repr(str(photos)))
    done = _python(code, env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    done = _vitkit("predict", "hf-hub:someone/not-cached", photos, env=env)
    assert done.returncode == 2 and "not in the Hugging Face cache" in done.stderr and "HF_HUB_OFFLINE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_i25_2_pretrained_hf_hub_of_a_model_without_timm_twin(cait_run, tmp_path):
    out = tmp_path / "hf"
    assert _vitkit("export", cait_run, "--format", "hf", "--out", out).returncode == 0
    cache = tmp_path / "hub"
    fill_cache(cache, "someone/cait", out)
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    code = f"""
import torch, vitkit
run = vitkit.load({str(cait_run)!r}, device="cpu").model
m = vitkit.create_model("cait_nano_patch4_16", in_chans=3, num_classes=3, pretrained="hf-hub:someone/cait").eval()
x = torch.rand(4, 3, 16, 16)
with torch.no_grad():
    assert torch.equal(m(x), run(x))
print("ok")
"""
    done = _python(code, env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

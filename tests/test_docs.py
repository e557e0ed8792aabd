"""The docs run as written (issue 17 item 22): every `vitkit ...` command in README.md and docs/*.md.

Commands in fenced blocks run in this process through ``vitkit.cli.main`` (exit code checked), with a
finished 1-epoch digits run for ``runs/.../<run>/``, 1 epoch for anything that trains, outputs in a
temporary folder, one transformer block where the command does not set the model's shape, at most 2
seeds or folds, and short ``vitkit bench`` timings (a ViT-S: batch 2). Usage lines
(``RUN_DIR``, ``[--opt]``, ``...``) and inline mentions are checked against ``vitkit <command> --help``:
the command exists and takes every option the doc shows. Commands that cannot run here are skipped by
the explicit list below, each with its reason; a command that repeats another one's code path with
the same options is checked as a usage line by the SAME list (the other must still be in the docs). A
new doc command is picked up by the generic rules, so a doc that drifts fails here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vitkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# substring of a documented command -> why it is not run here
SKIP = {
    "--device cuda": "needs a GPU (benchmarks/gpu.sh runs the GPU commands)",
    "--resume runs/": "needs an interrupted run (tests/test_resume.py kills and resumes real runs)",
    "model.attention=sigmoid": "the tutorial's plugin package (my-vitkit-attention) is written by the reader",
    "=softmax,sigmoid": "the tutorial's plugin package (my-vitkit-attention) is written by the reader",
    "torchrun": "several processes or machines (tests/test_distributed.py covers 2 processes)",
    "cifar": "downloads CIFAR-10 (no network in tests)",
    "vitkit serve runs/": "a server runs until stopped (tests/test_serve.py starts one on a free port and stops it)",
}
# a documented command -> (the doc command run instead, why this one is only checked as a usage line)
SAME = {
    "vitkit compare recipes/compare_attention_digits.toml --vary model.attention=softmax,cosine --seeds 3 --jobs 2": (
        "vitkit compare recipes/compare_attention_digits.toml --vary model.attention=softmax,cosine,lsa --seeds 3"
        " --jobs 2",
        "docs/compare.md runs the same compare code path with the same options and one more variant",
    ),
    "vitkit bench vit_small_patch16_224 --img-size 32 --patch-size 4 --vs timm": (
        "vitkit bench recipes/vit_small.toml --vs timm",
        "docs/benchmarks.md benches the same model and input (the recipe's ViT-S at 32 px, patch 4) beside timm",
    ),
    "vitkit bench vit_small_patch16_224 --img-size 32 --patch-size 4 --batch-size 64": (
        "vitkit bench recipes/vit_small.toml --vs timm",
        "docs/benchmarks.md benches the same model and input (the recipe's ViT-S at 32 px, patch 4), timm beside it",
    ),
}
# model keys a command may vary, set or search: the short-run model.depth=1 is not added to such a command
MODEL_SHAPE = ("model.depth", "model.embed_dim", "model.num_heads", "model.name")
PLACEHOLDER = re.compile(r"\.\.\.|\[|\||\b[A-Z][A-Z_]+\b|=N\b|<(?!run>)[a-z]+>")


def _commands() -> list[tuple[str, str, bool]]:
    """(where, command, fenced) for every `vitkit ...` in the docs; ```` ```text ```` blocks are output."""
    found = []
    for path in DOCS:
        fenced = output = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if line.lstrip().startswith("```"):
                fenced, output = not fenced, line.strip() == "```text"
                continue
            if fenced and not output:
                if line.startswith("vitkit "):
                    found.append((where, re.split(r"\s+#", line)[0].strip(), True))
                continue
            found.extend((where, span.strip(), False) for span in re.findall(r"`(vitkit [^`]+)`", line))
    return found


COMMANDS = _commands()


def _skip_reason(command: str) -> str | None:
    return next((reason for key, reason in SKIP.items() if key in command), None)


def _help(subcommand: str | None, capsys) -> str:
    code = main(["--help"] if subcommand is None else [subcommand, "--help"])
    out, err = capsys.readouterr()
    assert code == 0, f"vitkit {subcommand or ''} --help exited {code}: {err}"
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 1-epoch run of recipes/digits.toml (one block): the docs' ``runs/digits/<run>/``."""
    out = tmp_path_factory.mktemp("docs_runs")
    args = ["run", str(ROOT / "recipes/digits.toml"), "--set", "train.epochs=1", "--set", f'output.dir="{out}"']
    args += ["--set", "model.depth=1"]
    assert main(args) == 0
    (run_dir,) = (out / "digits").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def my_photos(tmp_path_factory):
    """The docs' ``my_photos/``: a flat folder of JPEGs of varied sizes, 3 classes."""
    from .photos import tiny_folder

    return tiny_folder(tmp_path_factory.mktemp("docs_photos") / "my_photos")


def _runnable(command: str, run_dir: Path, out: Path, photos: Path) -> list[str]:
    """The command's arguments with the docs' placeholders filled in and the short-run overrides
    (a shell redirection such as ``> my.toml`` is dropped: stdout is captured)."""
    text = re.sub(r"runs/\S*<run>/?", str(run_dir), command).replace("my_images/", "examples/digits/")
    text = re.sub(r"\bmy_photos/?(?=\s|$)", str(photos), re.sub(r"\s*>\s*\S+$", "", text))
    args = shlex.split(text)[1:]
    if args[0] == "runs":  # the docs' runs/ (or results/): the folder holding the finished run
        root = str(run_dir.parent.parent)
        args = ["runs", *(root if a.rstrip("/") in ("runs", "results") else a for a in args[1:])]
        if len(args) == 1 or args[1].startswith("-"):
            args.insert(1, root)
    args = [str(ROOT / a) if "/" in a and (ROOT / a).exists() else a for a in args]
    if args[0] in ("run", "compare", "tune") and "--dry-run" not in args:
        args += ["--set", "train.epochs=1", "--set", f'output.dir="{out}"']
        if not any(key in command for key in MODEL_SHAPE):  # one block trains through every code path
            args += ["--set", "model.depth=1"]
    if args[0] == "lr-find":  # a 50-update sweep of one block still draws the curve and picks a rate
        args += ["--set", "model.depth=1", "--steps", "50"]
    for option in ("--seeds", "--folds"):  # 2 repeats: means, intervals and paired verdicts still computed
        if option in args:
            at = args.index(option) + 1
            args[at] = str(min(int(args[at]), 2))
    if args[0] == "tune":  # a study of 2 one-epoch trials checks the command and its options
        args += ["--trials", "2"]
    if args[0] == "bench":
        args += ["--steps", "1", "--repeats", "1", "--warmup", "0"]
        # the option is checked; a small batch is fast (a ViT-S, 21.7 M parameters: 2 images, at the doc's
        # input size, whose work per image decides precision auto: bf16, timed against fp32)
        batch = "2" if "vit_small" in command else "8"
        if "--batch-size" in args:
            args[args.index("--batch-size") + 1] = batch
        else:
            args += ["--batch-size", batch]
    return args


@pytest.mark.slow
@pytest.mark.parametrize(("where", "command", "fenced"), COMMANDS, ids=[f"{w} {c}" for w, c, _ in COMMANDS])
def test_doc_command_runs(where, command, fenced, finished_run, my_photos, tmp_path, monkeypatch, capsys):
    reason = _skip_reason(command)
    if reason:
        pytest.skip(reason)
    words = shlex.split(re.sub(r"<run>", "RUN", command))
    subcommand = words[1] if len(words) > 1 and not words[1].startswith("-") else None
    if command in SAME:  # the other doc command must still be there (and run)
        assert SAME[command][0] in [c for _, c, f in COMMANDS if f], f"{where}: {SAME[command][1]}: it is gone"
    if subcommand is None or not fenced or PLACEHOLDER.search(command) or command in SAME:
        # a mention or usage line: the command exists and takes every option shown
        usage = _help(subcommand, capsys)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command):
            assert option in usage, f"{where}: `{command}`: vitkit {subcommand} has no {option}"
        return
    monkeypatch.chdir(tmp_path)  # relative outputs (--out, --json) land here
    code = main(_runnable(command, finished_run, tmp_path, my_photos))
    out, err = capsys.readouterr()
    assert code == 0, f"{where}: `{command}` exited {code}: {err[-2000:]}"


def test_every_doc_command_is_run_or_skipped_for_a_reason():
    assert len(COMMANDS) > 20  # the extraction still finds the docs' commands
    assert all(command.startswith("vitkit ") for _, command, _ in COMMANDS)


def _benchmark_scripts() -> list[str]:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    return sorted(set(re.findall(r"`(?:python |bash )?(benchmarks/[\w.]+\.(?:py|sh))", text)))


@pytest.mark.parametrize("script", _benchmark_scripts())
def test_benchmark_scripts_accept_help_as_documented(script):
    """docs/benchmarks.md: "All accept --help" (a usage message, exit 0, nothing run)."""
    runner = ["bash"] if script.endswith(".sh") else [sys.executable]
    result = subprocess.run([*runner, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_training_md_matches_the_recipes():
    from vitkit.engine import build
    from vitkit.recipe import load_recipe

    text = (ROOT / "docs" / "training.md").read_text()
    digits = load_recipe(ROOT / "recipes" / "digits.toml")
    described = re.search(r"`recipes/digits.toml`:.*?(\d+) epochs\)", text, re.S)
    assert described and int(described[1]) == digits.train.epochs
    small = load_recipe(ROOT / "recipes" / "vit_small.toml")
    params = sum(p.numel() for p in build.build_model(small, 10, 3).parameters())
    assert f"ViT-S/4 ({params / 1e6:.1f} M parameters" in text


def test_models_md_claims_224_px_configs_only_where_they_exist():
    text = (ROOT / "docs" / "models.md").read_text()
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ") and "`models/" in line]
    without = [row[1].strip() for row in rows if "224" not in row[3]]
    assert without, "every family has a 224 px config now: the docs may say so"
    assert not re.search(r"[Ee](?:ach|very family) has configs for 224", text), f"no 224 px configs: {without}"

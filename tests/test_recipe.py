"""Recipe loading, merging, overrides, and every user error as one line with exit code 2."""

import pytest

from vitkit import UserError, load_recipe
from vitkit.recipe import dump_toml, parse_override, recipe_from_dict

from .conftest import RECIPES


def test_shipped_recipes_validate():
    for path in RECIPES.glob("*.toml"):
        recipe = load_recipe(path)
        assert recipe.name and recipe.model["name"]


def test_extends_merges_tables_and_later_wins(write_recipe):
    write_recipe(
        'name = "base"\n[train]\nepochs = 7\nclip_grad = 1.0\n[model]\nname = "vit"\nimg_size = 32\n', "base.toml"
    )
    child = write_recipe('extends = "base.toml"\nname = "child"\n[train]\nepochs = 3\n[model]\ndepth = 2\n')
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.train.epochs == 3 and recipe.train.clip_grad == 1.0
    assert recipe.model == {"name": "vit", "img_size": 32, "depth": 2}


def test_set_overrides_parse_toml_values(write_recipe):
    path = write_recipe('[model]\nname = "vit"\n')
    recipe = load_recipe(
        path,
        [
            "train.epochs=3",
            "model.depth=2",
            "model.attention=softmax",
            "optimizer.betas=[0.9, 0.95]",
            "train.compile=true",
        ],
    )
    assert recipe.train.epochs == 3 and recipe.model["depth"] == 2
    assert recipe.model["attention"] == "softmax"  # bare word: a string
    assert recipe.optimizer["betas"] == [0.9, 0.95] and recipe.train.compile is True


def test_spec_tables_refine_the_default_component(write_recipe):
    recipe = load_recipe(write_recipe("[optimizer]\nlr = 0.5\n"))
    assert recipe.optimizer == {"name": "adamw", "lr": 0.5, "weight_decay": 0.05}
    recipe = load_recipe(write_recipe('[optimizer]\nname = "sgd"\n'))
    assert recipe.optimizer == {"name": "sgd"}


def test_set_replaces_spec_name_and_keeps_table():
    assert parse_override("a.b = 1") == (["a", "b"], 1)
    recipe = recipe_from_dict({"loss": "cross_entropy"})
    assert recipe.loss == {"name": "cross_entropy"}


def test_dump_round_trips(tmp_path):
    recipe = load_recipe(RECIPES / "digits.toml")
    path = tmp_path / "resolved.toml"
    path.write_text(dump_toml(recipe.to_dict()))
    assert load_recipe(path).to_dict() == recipe.to_dict()


BAD_RECIPES = [
    ("syntax", "name = \n", "invalid TOML"),
    ("unknown table", "[trian]\nepochs = 1\n", "unknown key 'trian' in top level (did you mean 'train'?)"),
    ("unknown key", "[train]\nepochz = 1\n", "unknown key 'train.epochz' in [train] (did you mean 'epochs'?)"),
    ("wrong type", '[train]\nepochs = "ten"\n', "train.epochs: expected an integer, got str 'ten'"),
    ("bool not int", "[train]\nepochs = true\n", "train.epochs: expected an integer, got bool True"),
    ("out of range", "[train]\nepochs = 0\n", "train.epochs: expected a value >= 1, got int 0"),
    ("fraction range", "[data]\nval_fraction = 0.9\n", "data.val_fraction: expected a value <= 0.5"),
    ("bad choice", '[train]\nprecision = "fp33"\n', "train.precision: expected one of 'auto', 'fp32', 'bf16', 'fp16'"),
    ("table expected", "train = 3\n", "train: expected a table, got int 3"),
    ("spec name type", "[optimizer]\nname = 3\n", "optimizer: expected a name or a table with a 'name' key"),
    ("extends type", "extends = 3\n", "extends: expected a file name"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_RECIPES, ids=[c[0] for c in BAD_RECIPES])
def test_bad_recipes_are_one_line_errors(cli, write_recipe, case, text, message):
    path = write_recipe(text)
    code, out, err = cli("run", path, "--dry-run")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err
    assert message in err


BAD_COMPONENTS = [
    ('[model]\nname = "vit_tiny_patch16_244"\n', "model: unknown models 'vit_tiny_patch16_244' (did you mean"),
    (
        '[model]\nname = "vit"\nimg_size = 32\ndepht = 2\n',
        "unknown key model.depht for models 'vit' (did you mean 'depth'?)",
    ),
    ('[model]\nname = "vit"\nimg_size = 30\npatch_size = 4\n', "img_size 30 is not divisible by patch_size 4"),
    (
        '[model]\nname = "vit"\nimg_size = 32\npatch_size = 4\nembed_dim = 100\nnum_heads = 3\n',
        "embed_dim 100 is not divisible by num_heads 3",
    ),
    (
        '[model]\nname = "vit"\nimg_size = 32\nattention = "softmx"\n',
        "unknown attention 'softmx' (did you mean 'softmax'?)",
    ),
    ('[data]\ndataset = "digitz"\n', "data.dataset: unknown datasets 'digitz' (did you mean 'digits'?)"),
    (
        '[optimizer]\nname = "adamw"\nlearning_rate = 0.1\n',
        "unknown key optimizer.learning_rate for optimizers 'adamw'",
    ),
    ('[scheduler]\nname = "cosin"\n', "scheduler: unknown schedulers 'cosin' (did you mean 'cosine'?)"),
    ('[loss]\nname = "cross_entropy"\nlabel_smoothing = 1.5\n', "label_smoothing must be in [0, 1)"),
    (
        '[augment]\ntrain = ["translat"]\n',
        "augment.train[0]: unknown augmentations 'translat' (did you mean 'translate'?)",
    ),
    (
        '[data]\ndataset = { name = "imagefolder" }\nroot = "/nonexistent/folder"\n',
        "data.root /nonexistent/folder is not a folder",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_COMPONENTS)
def test_bad_components_are_one_line_errors(cli, write_recipe, text, message):
    path = write_recipe(text)
    code, out, err = cli("run", path, "--dry-run")
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_extends_missing_and_cycles(cli, write_recipe):
    path = write_recipe('extends = "nothere.toml"\n')
    code, _, err = cli("run", path, "--dry-run")
    assert code == 2 and "extends 'nothere.toml', which does not exist" in err
    write_recipe('extends = "b.toml"\n', "a.toml")
    b = write_recipe('extends = "a.toml"\n', "b.toml")
    code, _, err = cli("run", b, "--dry-run")
    assert code == 2 and "extends cycle b.toml -> a.toml -> b.toml" in err


def test_missing_recipe_and_bad_set(cli, tmp_path):
    code, _, err = cli("run", tmp_path / "none.toml")
    assert code == 2 and "none.toml' does not exist" in err
    code, _, err = cli("run", RECIPES / "digits.toml", "--set", "train.epochs", "--dry-run")
    assert code == 2 and "--set 'train.epochs': expected KEY.PATH=VALUE" in err
    code, _, err = cli("run", RECIPES / "digits.toml", "--set", "seed.x=1", "--dry-run")
    assert code == 2 and "'seed' is a value, not a table" in err


def test_load_recipe_raises_user_error(tmp_path):
    with pytest.raises(UserError):
        load_recipe(tmp_path / "missing.toml")


def test_dry_run_prints_model_summary(cli):
    code, out, err = cli("run", RECIPES / "vit_small.toml", "--dry-run")
    assert code == 0, err
    assert "vit_small_patch16_224" in out
    assert "21,342,346" in out  # ViT-S/4 at 32 px with 10 classes
    assert "GFLOPs/img" in out and "GMACs/img" in out

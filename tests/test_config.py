import subprocess
import sys

import pytest

from fmforge.config import RecipeError, load_recipe


def test_demo_recipe_is_the_default():
    r = load_recipe()
    assert r.name == "demo" and r.model.preset == "tiny" and r.tokenizer.vocab_size == 4096


def test_override_parses_yaml_values():
    r = load_recipe(None, ["train.max_steps=50", "model.tie_embeddings=false", "data.sources=[a, b]"])
    assert r.train.max_steps == 50 and r.model.tie_embeddings is False and r.data.sources == ["a", "b"]


def test_preset_fills_fields_and_explicit_fields_win(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: {preset: gpt2-124m, n_layers: 6}\n")
    r = load_recipe(p)
    assert r.model.d_model == 768 and r.model.n_layers == 6 and r.model.vocab_size == 50304


@pytest.mark.parametrize("text, needle", [
    ("model: {d_model: 384, n_heads: 5}\n", "model.n_heads must divide model.d_model (got 384 and 5)"),
    ("model: {widht: 3}\n", "model.widht: unknown field; allowed:"),
    ("train: {max_steps: many}\n", "train.max_steps"),
    ("tokenizer: {digits: 2}\n", "tokenizer.digits"),
    ("bogus: 1\n", "bogus: unknown field"),
    ("model: {preset: gpt5}\n", "unknown preset 'gpt5'"),
])
def test_invalid_recipes_name_the_field(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert needle in str(e.value)


def test_unknown_override_key():
    with pytest.raises(RecipeError, match="unknown field 'max_step' in train"):
        load_recipe(None, ["train.max_step=3"])


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="recipe file not found: nope.yaml"):
        load_recipe("nope.yaml")


@pytest.mark.parametrize("args", [["config", "show", "--recipe", "missing.yaml"],
                                  ["config", "show", "--set", "model.n_heads=5"],
                                  ["config", "show", "--set", "train.nope=1"]])
def test_cli_bad_input_exits_2_without_traceback(args):
    p = subprocess.run([sys.executable, "-m", "fmforge", *args], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "error" in p.stderr


def test_config_show_prints_resolved_recipe():
    p = subprocess.run([sys.executable, "-m", "fmforge", "config", "show", "--set", "model.d_model=384"],
                       capture_output=True, text=True, check=True)
    assert "d_model: 384" in p.stdout and "vocab_size: 4096" in p.stdout


@pytest.mark.parametrize("verb", [[], ["run"], ["train"], ["eval"], ["sample"], ["config", "show"],
                                  ["data", "collect"], ["data", "prepare"], ["tokenizer", "train"],
                                  ["tokenizer", "encode"], ["tokenizer", "report"], ["cost"],
                                  ["cost", "estimate"], ["cost", "plan"], ["cost", "serve"]])
def test_every_verb_has_help_with_an_example(verb):
    p = subprocess.run([sys.executable, "-m", "fmforge", *verb, "--help"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Example" in p.stdout


def test_bare_on_off_read_as_compile_modes():
    assert load_recipe(None, ["train.compile=on"]).train.compile == "on"
    assert load_recipe(None, ["train.compile=off"]).train.compile == "off"


def test_an_empty_section_is_its_defaults(tmp_path):
    """`train:` with every field commented out is YAML null: before, an error ('train: Input
    should be a valid dictionary') and `--set train.max_steps=3` said "'train' is not a section"."""
    p = tmp_path / "r.yaml"
    p.write_text("name: t\ntrain:\n  # max_steps: 5\nmodel:\ndata:\n  gopher:\n")
    r = load_recipe(p, ["train.max_steps=3"])
    assert r.train.max_steps == 3 and r.data.gopher.min_words == 50 and r.model.d_model == 256
    with pytest.raises(RecipeError, match="train needs a budget"):  # as `train: {}` does
        load_recipe(p)
    (tmp_path / "child.yaml").write_text("extends: demo\ntrain:\n")  # keeps the demo's train section
    assert load_recipe(tmp_path / "child.yaml").train == load_recipe("demo").train


def test_a_bad_set_value_is_blamed_on_the_set_not_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntrain:\n  max_steps: 5\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(str(recipe), ["data.sources=[1]", "train.lr=-1"])
    msg = str(e.value)
    assert "--set data.sources=[1]: data.sources.0:" in msg and "--set train.lr=-1: " in msg, msg
    assert str(recipe) not in msg, msg  # the file holds no error
    recipe.write_text("name: r\ntrain:\n  max_steps: -5\n")
    with pytest.raises(RecipeError) as e:  # an error of the file's own is still the file's
        load_recipe(str(recipe), ["train.lr=0.1"])
    assert f"invalid recipe {recipe}" in str(e.value) and "train.max_steps" in str(e.value)
    assert "--set train.lr=0.1:" not in str(e.value)


def test_a_single_value_set_into_a_list_field_is_a_list_of_one():
    r = load_recipe(None, ["data.sources=stdlib", "data.include=*.py", "eval.tasks=hellaswag",
                           "finetune.lora.target_modules=wq", "train.max_steps=3"])
    assert r.data.sources == ["stdlib"] and r.data.include == ["*.py"] and r.eval.tasks == ["hellaswag"]
    assert r.finetune.lora.target_modules == ["wq"]
    assert r.train.max_steps == 3  # not a list field: as given
    assert load_recipe(None, ["data.sources=[a, b]"]).data.sources == ["a", "b"]
    with pytest.raises(RecipeError, match="train.max_steps"):
        load_recipe(None, ["train.max_steps=[3]"])  # a list into a scalar field stays an error


@pytest.mark.parametrize("tokens, word", [('["<|endoftext|>", "<|pad|>", "<|endoftext|>"]', "more than once"),
                                          ('["<|endoftext|>", "", "<|pad|>"]', "empty")])
def test_special_tokens_must_be_distinct_and_non_empty(tokens, word):
    # HF's BpeTrainer drops a repeated or empty token without a word, so ids no longer follow the list
    with pytest.raises(RecipeError, match=word) as e:
        load_recipe(None, [f"tokenizer.special_tokens={tokens}"])
    assert "tokenizer.special_tokens" in str(e.value)

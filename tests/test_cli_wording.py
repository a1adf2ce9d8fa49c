"""What the command line tells a user who points it at the wrong place or gives a bad value:
each refusal names the real reason and what to do (exit 2), and touches nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_recipe


def _cli(*args: str):
    from fmforge.cli import app

    return CliRunner().invoke(app, list(args))


def _files(folder: Path) -> dict[str, int]:
    """Every file's modification time, less the run's lock (each command holds it a while)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.name != ".lock"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir) -> tuple[Path, Path]:
    """A recipe and its run, through training (2 steps)."""
    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline

    tmp = tmp_path_factory.mktemp("wording")
    recipe = write_recipe(tmp / "r.yaml", corpus_dir, tmp / "runs", train={"max_steps": 2, "micro_batch": 2,
                                                                            "warmup_steps": 1, "threads": 1})
    Pipeline(load_recipe(recipe), verbose=False).run_stages(["collect", "prepare", "tokenizer", "train"])
    return recipe, tmp / "runs" / "t"


def test_an_out_into_a_folder_of_the_pipeline_says_whose_it_is(trained, corpus_dir):
    from fmforge.errors import UserError

    recipe, run = trained
    for args, says in (
            (["train", "--recipe", str(recipe), "--out", str(run / "train")],
             f"the train stage of the fmforge run {run} (recipe name `t`)"),
            (["data", "collect", str(corpus_dir), "--out", str(run)], "the fmforge run folder of recipe name `t`")):
        before = _files(run)
        r = _cli(*args)
        assert isinstance(r.exception, UserError), r.output
        msg = str(r.exception)
        assert says in msg and "fmforge run" in msg and "another --out" in msg, msg
        assert "did not write" not in msg, msg
        assert _files(run) == before  # refused: nothing written, moved or removed


def _fmforge(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fmforge", *args], capture_output=True, text=True)


def test_config_check_validates_a_recipe_and_exits_0_or_2_naming_the_field(tmp_path, corpus_dir):
    import yaml

    good = write_recipe(tmp_path / "good.yaml", corpus_dir, tmp_path / "runs")
    r = _fmforge("config", "check", str(good))
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr
    assert not (tmp_path / "runs").exists()  # checking runs nothing
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(good.read_text()), "train": {"lr": -1}}))
    r = _fmforge("config", "check", "--recipe", str(bad))
    assert r.returncode == 2 and "train.lr" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    r = _fmforge("config", "check", str(good), "--set", "model.n_layers=0")
    assert r.returncode == 2 and "model.n_layers" in r.stderr
    assert "check" in _cli("config", "--help").output


def test_ctrl_c_in_any_command_says_interrupted_and_exits_130(monkeypatch, capsys):
    """typer turns a KeyboardInterrupt inside a command into a silent exit 130; the stage
    commands without their own handler (tokenizer encode, prepare) then stopped without a word."""
    import typer

    import fmforge.cli as cli

    demo = typer.Typer()

    @demo.command()
    def work():
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a command

    @demo.command()
    def done():
        raise typer.Exit(130)  # a command's own exit 130, no interrupt: no message added

    monkeypatch.setattr(cli, "app", demo)
    for args, said in ((["work"], True), (["done"], False)):
        monkeypatch.setattr("sys.argv", ["fmforge", *args])
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 130
        assert ("interrupted" in capsys.readouterr().err) is said

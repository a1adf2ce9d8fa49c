"""Result files are written by temp file + rename: a write that fails half-way (a full disk)
leaves the previous file whole, or no file, never a truncated one, and no temp file behind."""
from __future__ import annotations

import errno
import json
import pathlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_dir) -> tuple[Path, Path]:
    from fmforge.cli import app

    tmp = tmp_path_factory.mktemp("atomic")
    recipe = write_recipe(tmp / "r.yaml", corpus_dir, tmp / "runs",
                          train={"max_steps": 2, "micro_batch": 2, "warmup_steps": 1, "threads": 1})
    r = CliRunner().invoke(app, ["run", "--recipe", str(recipe)])
    assert r.exit_code == 0, r.output
    return recipe, tmp / "runs" / "t"


@pytest.fixture
def disk_full(monkeypatch):
    """Make writes of files whose name contains `name` stop half-way with ENOSPC, as a full
    disk does: the first half of the text lands, then the write fails."""
    real = pathlib.Path.write_text

    def arm(name: str):
        def write_text(self, data, *a, **k):
            if name in self.name:
                real(self, data[: len(data) // 2], *a, **k)
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real(self, data, *a, **k)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)

    return arm


def _intact(folder: Path, name: str, before: str | None) -> None:
    f = folder / name
    assert (f.read_text() if f.exists() else None) == before, f"{f} was left half-written"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.tmp")], "a temp file was left behind"


def test_tokenizer_config_files_survive_a_failed_save(run, tmp_path, disk_full):
    from fmforge.tokenizer.bpe import load, save

    tok = load(run[1] / "tokenizer")
    save(tok, tmp_path)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        before = (tmp_path / name).read_text()
        json.loads(before)
        disk_full(name)
        with pytest.raises(OSError):
            save(tok, tmp_path)
        _intact(tmp_path, name, before)


def test_eval_json_and_sample_txt_survive_a_failed_write(run, tmp_path, disk_full):
    from fmforge.config import load_recipe
    from fmforge.eval.run import evaluate_run, sample_run

    recipe, run_dir = run
    r = load_recipe(recipe)
    for name, fn in (("eval.json", evaluate_run), ("sample.txt", sample_run)):
        shutil.copyfile(run_dir / name.split(".")[0] / name, tmp_path / name)
        before = (tmp_path / name).read_text()
        disk_full(name)
        with pytest.raises(OSError):
            fn(r, run_dir, tmp_path)
        _intact(tmp_path, name, before)


def test_train_summary_is_never_left_half_written(run, tmp_path, disk_full):
    from fmforge.config import load_recipe
    from fmforge.train.trainer import train

    recipe, run_dir = run
    disk_full("summary.json")
    with pytest.raises(OSError):
        train(load_recipe(recipe), run_dir / "tokenizer" / "shards", tmp_path / "train", verbose=False)
    assert (tmp_path / "train" / "model.safetensors").is_file()  # the run got as far as its last write
    _intact(tmp_path / "train", "summary.json", None)

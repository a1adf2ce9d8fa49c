"""Every `fmforge ...` command in the README's code blocks runs, in order, as written.

Commands that train get the test's small corpus and a small model appended as `--set`
overrides (after the README's own, so the README's settings are kept unless they are
scale: the model shape and the step budget), so the whole README runs in a minute on a
CPU. What each command prints is checked for the claim the README makes beside it.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fmforge "):
                cmds.append(line)
    return cmds


def readme_inline_exports() -> list[str]:
    """`fmforge export ...` written inline in the README's prose, without placeholders."""
    text = (ROOT / "README.md").read_text()
    return [c for c in re.findall(r"`(fmforge export [^`]*)`", text) if "[" not in c]


def scale(corpus: Path, resume: bool) -> list[str]:
    sets = {"data.sources": f"[{corpus}]", "data.include": "['*.py']", "data.val_fraction": "0.15",
            "tokenizer.vocab_size": "512", "model.vocab_size": "null",
            "model.d_model": "64", "model.n_layers": "2", "model.n_heads": "2", "model.n_kv_heads": "null",
            "model.ffn_dim": "null", "model.context_length": "64", "train.micro_batch": "4",
            "train.max_steps": "5" if resume else "3", "train.device": "cpu", "train.compile": "off",
            "train.threads": "1", "eval.max_new_tokens": "8", "eval.max_docs": "4"}
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def test_readme_has_examples():
    cmds = readme_commands()
    assert any(c.startswith("fmforge run") for c in cmds) and any("--resume" in c for c in cmds)


@pytest.mark.timeout(900)
def test_every_readme_command_runs(corpus_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cmd in readme_commands():
        args = shlex.split(cmd)[1:]
        args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
        if args[0] in ("run", "train", "eval"):
            args += scale(corpus_dir, "--resume" in args)
        r = subprocess.run([sys.executable, "-m", "fmforge", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, cmd
        if "--resume" in args:
            assert "continuing the run" in r.stderr, f"{cmd} did not continue the earlier run:\n{r.stderr[-2000:]}"
    exports = readme_inline_exports()  # on the run the commands above made
    assert exports
    for cmd in exports:
        r = subprocess.run([sys.executable, "-m", "fmforge", *shlex.split(cmd)[1:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"

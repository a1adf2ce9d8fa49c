"""Checkpoints written atomically: a temp folder, fsync, then rename to `step-NNNNNNNN`.

A folder named `step-*` is therefore always complete; a save killed half-way leaves only
a `.tmp-*` folder, which the next save removes. The newest K are kept.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(ckpt_dir: Path, step: int, state: dict, keep: int) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".tmp-step-{step:08d}-{os.getpid()}"
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if os.environ.get("FMFORGE_FAULT") == f"kill-in-save:{step}":  # tests: die between write and rename
        os.kill(os.getpid(), 9)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    for old in complete(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete(ckpt_dir: Path) -> list[Path]:
    return sorted(p for p in Path(ckpt_dir).glob("step-*") if (p / "state.pt").exists())


def latest(ckpt_dir: Path) -> Path | None:
    found = complete(ckpt_dir)
    return found[-1] if found else None


def load(path: Path, map_location="cpu") -> dict:
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=False)

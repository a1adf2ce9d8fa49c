"""Folders fmforge writes: claimed before writing, locked while writing.

- ``claim(out, kind, inputs)``: a command's ``--out`` must be a new or empty folder, or
  one that the same kind of fmforge command wrote before (it holds ``.fmforge.json``).
  A folder with files of someone else, a file, an input itself or a folder inside or
  around an input is refused: a command never deletes or overwrites what it did not
  write. ``OutputDir.record`` lists the files written, so a later run removes only those.
- ``locked(folder)``: an exclusive ``flock`` on ``folder/.lock`` for as long as a process
  writes the folder. A second process is refused with the holder's pid, host and
  command. The kernel drops the lock when its process dies, so a lock left by a killed
  process is taken over without anyone deleting anything.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from fmforge.errors import InputNotFound, RunLocked, UserError

MARK = ".fmforge.json"
LOCK = ".lock"
OURS = {MARK, LOCK}


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file by temp file + rename: readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt: leave no half-written temp file behind
        tmp.unlink(missing_ok=True)
        raise


def _relation(out: Path, inp: Path) -> str | None:
    o, i = out.resolve(), inp.resolve()
    if o == i:
        return "is the input"
    if i in o.parents:
        return "is inside the input"
    if o in i.parents:
        return "holds the input"
    return None


class OutputDir:
    """A folder claimed by one kind of fmforge command."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind = Path(path), kind

    @property
    def mark(self) -> Path:
        return self.path / MARK

    def _read(self) -> dict:
        try:
            return json.loads(self.mark.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def written(self) -> set[str]:
        """Names of the files earlier runs of this command recorded here."""
        return set(self._read().get("files", []))

    def record(self, names: Iterable[str]) -> None:
        data = self._read() or {"kind": self.kind}
        data["files"] = sorted(set(data.get("files", [])) | {str(n) for n in names})
        atomic_write_text(self.mark, json.dumps(data, indent=1))

    def forget(self, names: Iterable[str]) -> None:
        data = self._read() or {"kind": self.kind}
        drop = {str(n) for n in names}
        data["files"] = sorted(set(data.get("files", [])) - drop)
        atomic_write_text(self.mark, json.dumps(data, indent=1))

    def remove_stale(self, keep: Iterable[str]) -> list[str]:
        """Delete files that earlier runs recorded and this run did not write again."""
        keep = {str(k) for k in keep}
        gone = []
        for name in sorted(self.written() - keep):
            p = self.path / name
            if p.is_file():
                p.unlink()
            gone.append(name)
        self.forget(gone)
        return gone


def _stage_of(folder: Path) -> str | None:
    """The stage named in a pipeline stage record (stage.json, or started.json while it runs)."""
    for f in ("stage.json", "started.json"):
        try:
            stage = json.loads((folder / f).read_text()).get("deps", {}).get("stage")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(stage, str):
            return stage
    return None


def _pipeline_folder(out: Path) -> str | None:
    """How to name `out` when the pipeline (fmforge.pipeline) wrote it: a stage folder of a
    run, or a run folder; None otherwise."""
    stage = _stage_of(out)
    if stage:
        return f"the {stage} stage of the fmforge run {out.parent} (recipe name `{out.parent.name}`)"
    if any(_stage_of(p) for p in out.iterdir() if p.is_dir()):
        return f"the fmforge run folder of recipe name `{out.name}`"
    return None


def claim(out: Path, kind: str, inputs: Iterable[Path | str] = (), flag: str = "--out") -> OutputDir:
    """Make `out` a folder this command may write, or raise UserError saying why not."""
    out = Path(out)
    for inp in inputs:
        if str(inp) == "stdlib":
            continue
        rel = _relation(out, Path(inp))
        if rel:
            raise UserError(f"{flag} {out} {rel} {inp}: choose a separate output folder "
                            "(fmforge never writes into its inputs)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder")
    d = OutputDir(out, kind)
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OURS)
        if d.mark.exists():
            owner = d._read().get("kind")
            if owner != kind:
                raise UserError(f"{flag} {out} was written by `fmforge {owner}`, not `fmforge {kind}`: "
                                "choose another output folder")
        elif foreign:
            what = _pipeline_folder(out)
            if what:  # ours, but the pipeline's: its stage records decide what happens to it
                raise UserError(f"{flag} {out} is {what}, which `fmforge run` keeps up to date: run that recipe "
                                f"(e.g. `fmforge run --recipe RECIPE`), or choose another {flag} for a separate "
                                f"`fmforge {kind}` output")
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"{flag} {out} already holds files fmforge did not write ({shown}): "
                            "choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    if not d.mark.exists():
        atomic_write_text(d.mark, json.dumps({"kind": kind, "files": []}, indent=1))
    return d


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} (`{h['command']}`, since {h['since']})"
    except (OSError, json.JSONDecodeError, KeyError):
        return "another process"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the duration of the block (see module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{folder} is being written by {_holder(path)}; wait for it to finish or stop it "
                            "(a lock whose process has died is taken over)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:4]) or "python",
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first: what a
    mkdir(parents=True) of it would create."""
    out, p = [], Path(folder).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_if_empty(made: list[Path]) -> None:
    """Undo `missing_folders`' creations that hold nothing (their lock at most), innermost
    first; a folder with anything else in it stays, and so do all above it."""
    for d in made:
        try:
            if {p.name for p in d.iterdir()} <= {LOCK}:
                (d / LOCK).unlink(missing_ok=True)
            d.rmdir()  # fails, and stops here, if anything appeared meanwhile
        except OSError:
            return


@contextmanager
def claimed(out: Path, kind: str, inputs: Iterable) -> Iterator[OutputDir]:
    """claim(out) for the block; on a user error, a folder this call created is removed
    again (it holds only what this command wrote), so bad input leaves no partial output."""
    out = Path(out)
    created = not out.exists()
    od = claim(out, kind, list(inputs))
    try:
        yield od
    except UserError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def need(path: Path, what: str) -> Path:
    if str(path) != "stdlib" and not Path(path).exists():
        raise InputNotFound(f"{what} not found: {path}")
    return Path(path)

"""Sharded checkpoints through torch.distributed.checkpoint (DCP), resumable on any world size.

A checkpoint is a folder `step-NNNNNNNN/`:
  *.distcp, .metadata   the model and optimizer state; each rank writes its own shard (FSDP)
                        or, for replicated tensors (DDP, one device), one rank writes them
  train_state.pt        the rest of the run (step, tokens, loader position, schedule plan,
                        RNG, identity), written by rank 0
  COMPLETE              written last: only a folder holding it counts as a checkpoint
The folder is written as `.tmp-step-N` and renamed once complete, so a save killed half-way
leaves only a `.tmp-*` folder (removed by the next save). DCP stores each tensor with its
global shape and the offsets of every shard, so a checkpoint written by 2 ranks loads into
1 or 4 (the reader takes the pieces its own shard needs). The newest K are kept.

All ranks must call `save` and `load` (they are collectives); the folder must be on a file
system every rank sees (one node: any disk; several nodes: a shared one).
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

MARKER = "COMPLETE"
STATE = "train_state.pt"
LEGACY = "state.pt"  # before DCP: the whole state in one torch.save file, gathered on rank 0


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def _one_process(verb: str):
    """DCP warns on every save/load without a process group that it assumes one process:
    that is what we ask for (no_dist), so that one warning, and only it, is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, message=re.escape(
            f"torch.distributed is disabled, unavailable or uninitialized, assuming the intent is to {verb} in a "
            "single process."))
        yield


def write_synced(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save(ckpt_dir: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, train_state: dict,
         keep: int) -> Path:
    """Write step-NNNNNNNN (every rank its shard, rank 0 the rest) and return its path."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".tmp-step-{step:08d}"
    main = _rank() == 0
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    _barrier()  # the folder exists, and no rank writes into a stale one
    model_sd, optim_sd = get_state_dict(model, opt)
    with _one_process("save"):  # returns once every rank wrote
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp), no_dist=not dist.is_initialized())
    if main:
        write_synced(tmp / STATE, lambda f: torch.save(train_state, f))
        fsync_path(tmp)
        if os.environ.get("FMFORGE_FAULT") == f"kill-in-save:{step}":  # tests: die before the marker
            os.kill(os.getpid(), 9)
        write_synced(tmp / MARKER, lambda f: f.write(b"ok\n"))
        fsync_path(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(ckpt_dir)
        for old in complete(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()  # every rank returns a checkpoint that counts
    return final


def is_complete(path: Path) -> bool:
    path = Path(path)
    return (path / MARKER).is_file() or (path / LEGACY).is_file()


def complete(ckpt_dir: Path) -> list[Path]:
    return sorted(p for p in Path(ckpt_dir).glob("step-*") if is_complete(p))


def latest(ckpt_dir: Path) -> Path | None:
    found = complete(ckpt_dir)
    return found[-1] if found else None


def load(path: Path) -> dict:
    """The run's state apart from the tensors (step, loader, plan, identity, ...)."""
    path = Path(path)
    if not (path / MARKER).is_file() and (path / LEGACY).is_file():
        return torch.load(path / LEGACY, map_location="cpu", weights_only=False)
    return torch.load(path / STATE, map_location="cpu", weights_only=False)


def restore(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load the model and optimizer tensors into this rank's (possibly sharded) model; every
    rank calls this. The checkpoint may come from any world size and strategy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    path = Path(path)
    if not (path / MARKER).is_file():  # a checkpoint from before DCP: whole tensors in one file
        state = load(path)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        return
    import torch.distributed.checkpoint as dcp

    model_sd, optim_sd = get_state_dict(model, opt)  # the layout to fill: this rank's shards
    sd = {"model": model_sd, "optim": optim_sd}
    with _one_process("load"):
        dcp.load(sd, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def consolidate(path: Path) -> dict[str, torch.Tensor]:
    """The model's whole tensors from a checkpoint folder, in one process (no process group,
    any world size it was written with): what a single-file export for inference needs."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    if not (path / MARKER).is_file():
        return load(path)["model"]
    reader = FileSystemReader(str(path))
    meta = reader.read_metadata()
    sd = {"model": {}}
    for fqn, md in meta.state_dict_metadata.items():
        if fqn.startswith("model.") and isinstance(md, TensorStorageMetadata):
            sd["model"][fqn[len("model."):]] = torch.empty(md.size, dtype=md.properties.dtype)
    with _one_process("load"):
        dcp.load(sd, storage_reader=reader, no_dist=True)  # this process alone
    return sd["model"]


def is_sharded(path: Path) -> bool:
    """A complete DCP checkpoint folder (what `fmforge export --model` also takes)."""
    return (Path(path) / MARKER).is_file() and (Path(path) / STATE).is_file()


def consolidated_model(path: Path):
    """The checkpoint's model as one Transformer on the CPU, for inference or export."""
    from fmforge.config import ModelConfig
    from fmforge.model.transformer import Transformer

    model = Transformer(ModelConfig(**load(path)["model_config"]))
    state = {k.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", ""): v
             for k, v in consolidate(path).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()

"""A trained model on disk: `model.safetensors` (the weights) beside `model.json` (its
ModelConfig). Written atomically; what eval, sample, export and serve load."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fmforge.config import ModelConfig
from fmforge.errors import InputNotFound, UserError
from fmforge.outputs import atomic_write_text
from fmforge.model.transformer import Transformer


def save_model(model_state: dict[str, torch.Tensor], mcfg: ModelConfig, out_dir: Path) -> None:
    state = {k.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", ""): v.detach().cpu().contiguous()
             for k, v in model_state.items()}
    if mcfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out_dir / "model.safetensors")
    atomic_write_text(out_dir / "model.json", mcfg.model_dump_json(indent=2))


def load_model(run_train_dir: Path, device: str | torch.device = "cpu") -> Transformer:
    """The model in `run_train_dir`; a missing, cut-short or mismatched file is a UserError
    naming it and the command that writes it."""
    d = Path(run_train_dir)
    cfg_file, weights = d / "model.json", d / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise InputNotFound(f"no trained model in {d}: {f.name} is missing; {_MAKE}")
    mcfg = read_config(cfg_file)
    model = Transformer(mcfg)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:  # cut short, not safetensors at all, unreadable
        raise UserError(f"{weights} is not a readable safetensors file ({_one_line(e)}); {_MAKE}") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:  # weights of another run or another shape than model.json says
        key = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
        raise UserError(f"{weights} does not match {cfg_file.name}: tensor {key!r} is {got.get(key, 'missing')} "
                        f"in the file, {want.get(key, 'absent')} in the model; {_MAKE}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


_MAKE = "make it with `fmforge train` (or `fmforge run`)"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def read_config(path: Path) -> ModelConfig:
    try:
        mcfg = ModelConfig.model_validate_json(path.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; {_MAKE}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise UserError(f"{path} is not a model config ({where}: {_one_line(first['msg'])}); {_MAKE}") from None
    if mcfg.vocab_size is None:
        raise UserError(f"{path} has no vocab_size; {_MAKE}")
    return mcfg

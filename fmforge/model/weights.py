"""A trained model on disk: `model.safetensors` (the weights) beside `model.json` (its
ModelConfig). Written atomically; what eval, sample, export and serve load."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fmforge.config import ModelConfig
from fmforge.model.transformer import Transformer


def save_model(model_state: dict[str, torch.Tensor], mcfg: ModelConfig, out_dir: Path) -> None:
    state = {k.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", ""): v.detach().cpu().contiguous()
             for k, v in model_state.items()}
    if mcfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out_dir / "model.safetensors")
    (out_dir / "model.json").write_text(mcfg.model_dump_json(indent=2))


def load_model(run_train_dir: Path, device: str | torch.device = "cpu") -> Transformer:
    run_train_dir = Path(run_train_dir)
    cfg_file = run_train_dir / "model.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no trained model in {run_train_dir} (model.json missing)")
    mcfg = ModelConfig.model_validate_json(cfg_file.read_text())
    model = Transformer(mcfg)
    model.load_state_dict(load_file(str(run_train_dir / "model.safetensors")), strict=True)
    return model.to(device).eval()

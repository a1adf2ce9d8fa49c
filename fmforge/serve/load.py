"""The model a server serves: an fmforge run, model or checkpoint folder (model.safetensors +
model.json, tokenizer.json beside it or in the run's tokenizer/) or a Hugging Face folder
(config.json + safetensors, loaded losslessly through fmforge.export.hf)."""
from __future__ import annotations

from pathlib import Path

import torch

from fmforge.config import ServeConfig
from fmforge.errors import UserError
from fmforge.tokenizer.bpe import EOT


def load_served_model(path: Path, device: str = "auto", dtype: str = "auto", adapter: Path | None = None):
    """(Transformer in eval mode on `device`, tokenizers.Tokenizer or None). With `adapter` (a
    LoRA adapter of `fmforge finetune`), the adapter folded into `path`, the base."""
    from fmforge.export.hf import load_hf_as_fmforge
    from fmforge.export.writer import find_tokenizer, model_dir
    from fmforge.model.weights import load_model

    path = Path(path)
    if adapter is not None:
        from fmforge.finetune.model import load_for_serving

        model, tok = load_for_serving(adapter, path)
    elif (path / "config.json").is_file():
        model, tok = load_hf_as_fmforge(path)
    else:
        mdir = model_dir(path)
        model, tok = load_model(mdir), None
        tok_file = find_tokenizer(mdir)
        if tok_file is not None:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(str(tok_file))
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"serve.device={device!r}: CUDA is not available on this machine")
    dt = {"auto": torch.bfloat16 if dev.startswith("cuda") else torch.float32}.get(dtype) or getattr(torch, dtype)
    return model.to(device=dev, dtype=dt).eval(), tok


def build_service(path: Path, cfg: ServeConfig, api_key: str | None = None, name: str | None = None,
                  adapter: Path | None = None):
    """Model, engine, scheduler (its thread started) and the API's Service for `path` (+ `adapter`)."""
    from fmforge.serve.engine import Engine
    from fmforge.serve.scheduler import Scheduler
    from fmforge.serve.service import Service

    model, tok = load_served_model(path, cfg.device, cfg.dtype, adapter)
    max_len = min(cfg.max_len or model.cfg.context_length, model.cfg.context_length)
    cuda = model.embed.weight.device.type == "cuda"
    engine = Engine(model, cfg.max_batch, max_len, graphs=cuda and cfg.cuda_graphs, compile=cfg.compile)
    engine.warmup()
    detok = None if tok is None else (lambda ids: tok.decode(ids, skip_special_tokens=False))
    sched = Scheduler(engine, detok, cfg.max_queue, cfg.prefill_tokens, cfg.lookahead)
    eos = None if tok is None else tok.token_to_id(EOT)
    p = Path(path).resolve()
    if adapter is not None:  # runs/ft/adapter is served as "ft"
        a = Path(adapter).resolve()
        name = name or (a.parent.name if a.name == "adapter" else a.name)
    return Service(sched, tok, name or (p.parent.name if p.name == "train" else p.name), api_key, eos)

"""What `fmforge eval --model DIR` accepts, resolved to an `LM`:

- a run folder (runs/NAME: train/model.json, tokenizer/tokenizer.json),
- a train folder (model.json + model.safetensors; the tokenizer in ../tokenizer) or a model
  folder with its tokenizer.json beside it (what `fmforge import-hf` writes),
- a checkpoint: the folder checkpoints/step-N the trainer writes (sharded,
  torch.distributed.checkpoint; consolidated here in one process, any world size), its
  train_state.pt, or an older single-file state.pt; the run's tokenizer found upward,
- a Hugging Face folder (config.json + safetensors + tokenizer.json; Llama/Qwen3/Mistral).

fmforge models read the document-boundary token first (they were trained so), so it
prefixes every sequence; an HF folder's tokenizer adds what its post-processor adds,
as lm-eval's `--model hf` does.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fmforge.config import ModelConfig
from fmforge.errors import InputNotFound, UserError
from fmforge.eval.loglik import LM


@dataclass
class Loaded:
    lm: LM
    kind: str  # run | train | checkpoint | hf
    run_dir: Path | None  # the fmforge run it belongs to, when there is one


def _tokenizer(path: Path):
    from fmforge.tokenizer.bpe import load

    return load(path)


def _find_up(start: Path, rel: str, levels: int = 4) -> Path | None:
    p = start.resolve()
    for _ in range(levels):
        if (p / rel).exists():
            return p / rel
        p = p.parent
    return None


def load_for_eval(path: Path | str, device: torch.device | str = "cpu", batch_tokens: int = 16384) -> Loaded:
    from fmforge.tokenizer.bpe import EOT

    d = Path(path)
    if not d.exists():
        raise InputNotFound(f"--model {d}: not found")
    if d.is_dir() and (d / "config.json").is_file():
        from fmforge.export.hf import load_hf_as_fmforge

        model, tok = load_hf_as_fmforge(d)
        if tok is None:
            raise InputNotFound(f"--model {d}: tokenizer.json is missing (fmforge reads HF fast tokenizers)")
        model = model.float().to(device)
        return Loaded(LM(model, tok, [], True, batch_tokens), "hf", None)
    if d.is_dir() and (d / "train" / "model.json").is_file():
        kind, run_dir, train_dir = "run", d, d / "train"
    elif d.is_dir() and (d / "model.json").is_file():
        kind, run_dir, train_dir = "train", d.parent, d
    else:
        from fmforge.train.checkpoint import LEGACY, STATE, is_sharded

        folder = d.parent if d.is_file() and d.name == STATE else d
        if folder.is_dir() and is_sharded(folder):
            return _from_sharded(folder, device, batch_tokens)
        state_file = d if d.is_file() else d / LEGACY
        if not state_file.is_file():
            raise InputNotFound(f"--model {d}: not a run folder, train folder, checkpoint (checkpoints/step-N) or "
                                "Hugging Face folder (config.json)")
        return _from_checkpoint(state_file, device, batch_tokens)
    from fmforge.model.weights import load_model

    model = load_model(train_dir, device)
    tok_file = run_dir / "tokenizer" / "tokenizer.json"
    if kind == "train" and (d / "tokenizer.json").is_file():
        # a model folder with its own tokenizer (what import-hf writes; serve and export read it
        # too) belongs to no run: the validation shards of the folder above are not its data
        tok_file, run_dir = d / "tokenizer.json", None
    elif not tok_file.is_file():
        raise InputNotFound(f"--model {d}: the run's tokenizer {tok_file} is missing (nor is there a "
                            f"tokenizer.json beside {train_dir / 'model.json'})")
    tok = _tokenizer(tok_file)
    return Loaded(LM(model, tok, [tok.token_to_id(EOT)], False, batch_tokens), kind, run_dir)


def _from_sharded(folder: Path, device, batch_tokens: int) -> Loaded:
    """A DCP checkpoint folder (what the trainer writes): its model tensors gathered here."""
    from fmforge.train.checkpoint import consolidated_model, load

    try:
        state = load(folder)
        with warnings.catch_warnings():  # DCP notes that it reads without a process group: that is the intent
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            model = consolidated_model(folder)
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError) as e:
        raise UserError(f"{folder} is not a readable fmforge checkpoint ({' '.join(str(e).split())})") from None
    return _with_tokenizer(model.to(device), state, folder, batch_tokens)


def _from_checkpoint(state_file: Path, device, batch_tokens: int) -> Loaded:
    from fmforge.model.transformer import Transformer

    try:
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        cfg = ModelConfig(**state["model_config"])
        weights = {k.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", ""): v
                   for k, v in state["model"].items()}
    except (OSError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise UserError(f"{state_file} is not an fmforge checkpoint ({' '.join(str(e).split())})") from None
    model = Transformer(cfg)
    if cfg.tie_embeddings:
        weights.pop("lm_head.weight", None)
    model.load_state_dict(weights, strict=True)
    return _with_tokenizer(model.to(device).eval(), state, state_file.parent, batch_tokens)


def _with_tokenizer(model, state: dict, where: Path, batch_tokens: int) -> Loaded:
    """The checkpoint's model with its run's tokenizer (recorded in the state, else found upward)."""
    from fmforge.tokenizer.bpe import EOT

    tok_file = None
    if state.get("tokens_dir"):
        cand = Path(state["tokens_dir"]).parent / "tokenizer.json"
        tok_file = cand if cand.is_file() else None
    tok_file = tok_file or _find_up(where, "tokenizer/tokenizer.json")
    if tok_file is None:
        raise InputNotFound(f"{where}: the run's tokenizer (tokenizer/tokenizer.json) was not found")
    tok = _tokenizer(tok_file)
    run_dir = tok_file.parent.parent
    return Loaded(LM(model, tok, [tok.token_to_id(EOT)], False, batch_tokens), "checkpoint", run_dir)

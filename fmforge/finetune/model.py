"""The model side of fine-tuning: load a base as a transformers causal LM, apply the method
(PEFT LoRA or prompt tuning, or every weight), and load a base + saved adapter back.

A fmforge model (a run, its train folder or a checkpoint folder with model.safetensors +
model.json) goes through the HF export (`fmforge.export.writer.export_hf`, a temporary
folder), so what is fine-tuned is exactly what `fmforge export` writes, and PEFT's
LoraConfig / PromptTuningConfig apply to it as to any HF model.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fmforge.config import FinetuneConfig
from fmforge.errors import InputNotFound, UserError

# Every attention and MLP projection (what `fmforge cost plan` counts for LoRA), per model_type.
_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
                "gpt2": ["c_attn", "c_proj", "c_fc"]}


@dataclass
class Base:
    model: torch.nn.Module  # a transformers PreTrainedModel
    tokenizer: object  # a transformers PreTrainedTokenizerFast
    source: str  # "fmforge" or "hf"
    path: Path


def _is_fmforge(path: Path) -> bool:
    return any((d / "model.safetensors").is_file() and (d / "model.json").is_file() for d in (path, path / "train"))


def _why(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def _from_hf_dir(d: Path):
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # transformers says what is wrong with a folder by raising ValueError / OSError (no model_type,
    # not JSON, no weight file) and safetensors by SafetensorError: the user's folder, not a bug
    try:
        cfg = AutoConfig.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"--model {d / 'config.json'}: not a transformers model config ({_why(e)})") from None
    if not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (cfg.architectures or [])):
        raise UserError(f"--model {d}: architectures {cfg.architectures} is not a causal language model")
    try:
        model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True)
    except (OSError, SafetensorError) as e:
        raise UserError(f"--model {d}: its weights could not be loaded ({_why(e)})") from None
    try:
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputNotFound(f"--model {d}: no tokenizer there ({_why(e)})") from None
    return model, tok


def quiet_libraries() -> None:
    """transformers' and PEFT's advice meant for their own users (generation length defaults,
    deprecations, a base folder without config.json) is noise in fmforge's output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for module in ("peft", "transformers"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def load_base(path: Path | str, tokenizer: Path | str | None = None) -> Base:
    """A fmforge model or local HF causal-LM folder as (HF model in fp32, HF tokenizer)."""
    quiet_libraries()
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"--model {path} not found")
    if _is_fmforge(path):
        from fmforge.export.writer import export_hf

        with tempfile.TemporaryDirectory(prefix="fmforge-ft-") as tmp:
            export_hf(path, Path(tmp), Path(tokenizer) if tokenizer else None)
            model, tok = _from_hf_dir(Path(tmp))
            for t in [*model.parameters(), *model.buffers()]:  # own the memory, not the temporary files'
                t.data = t.data.clone()
        source = "fmforge"
    elif (path / "config.json").is_file():
        model, tok = _from_hf_dir(path)
        source = "hf"
    else:
        raise InputNotFound(f"--model {path}: neither a fmforge model (model.safetensors + model.json, or a run "
                            "folder) nor a Hugging Face folder (config.json)")
    model.float()
    model.config.use_cache = False
    if tok.eos_token_id is None:
        raise UserError(f"--model {path}: the tokenizer has no end-of-sequence token, so a fine-tuned model "
                        "could not learn to stop")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return Base(model, tok, source, path.resolve())


def within_context(cfg: FinetuneConfig, model) -> tuple[FinetuneConfig, str | None]:
    """`cfg` with finetune.max_length capped to what the model reads: its context (HF
    max_position_embeddings / n_positions), less prompt tuning's virtual tokens. Rows longer than
    that put tokens at positions the model never trained on (RoPE extrapolates without an
    error), so the default 512 is fitted to a 256-token demo model. The note says so, or None."""
    ctx = next((v for v in (getattr(model.config, k, None) for k in ("max_position_embeddings", "n_positions"))
                if isinstance(v, int) and v > 0), None)
    if ctx is None:
        return cfg, None
    virtual = cfg.prompt_tuning.virtual_tokens if cfg.method == "prompt-tuning" else 0
    fits = ctx - virtual
    if fits < 8:  # say what fits, never what is left over (a negative count)
        most = f"use at most {ctx - 8} virtual tokens" if ctx > 8 else "the context is too short for prompt tuning"
        raise UserError(f"finetune.prompt_tuning.virtual_tokens {virtual} does not fit the model's {ctx}-token "
                        f"context (with finetune.max_length {cfg.max_length}, examples need at least 8 of its "
                        f"tokens): {most}")
    if cfg.max_length <= fits:
        return cfg, None
    less = f" less {virtual} virtual tokens" if virtual else ""
    return cfg.model_copy(update={"max_length": fits}), (
        f"finetune.max_length {cfg.max_length} is over the model's context ({ctx} tokens{less}): examples are "
        f"fitted to {fits} tokens (finetune.too_long: {cfg.too_long})")


def lora_targets(model, cfg: FinetuneConfig) -> list[str]:
    if cfg.lora.target_modules:
        return list(cfg.lora.target_modules)
    mt = model.config.model_type
    if mt not in LORA_TARGETS:
        raise UserError(f"finetune.lora.target_modules: no default for model type {mt!r}; name the linear "
                        f"layers to adapt (known defaults: {', '.join(LORA_TARGETS)})")
    return LORA_TARGETS[mt]


def apply_method(model, cfg: FinetuneConfig, tok=None):
    """The model to train: PEFT-wrapped for lora / prompt-tuning, itself for full."""
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    if cfg.method == "lora":
        pc = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                        lora_dropout=cfg.lora.dropout, target_modules=lora_targets(model, cfg),
                        fan_in_fan_out=model.config.model_type == "gpt2")
    else:
        pt = cfg.prompt_tuning
        init = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": pt.init_text,
                "tokenizer_name_or_path": getattr(tok, "name_or_path", None)} if pt.init_text else {}
        pc = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pt.virtual_tokens, **init)
        if pt.init_text:  # PEFT loads the tokenizer by name; hand it ours (no hub, no folder needed)
            return _prompt_tuning_from_text(model, pc, tok, pt.init_text)
    return get_peft_model(model, pc)


def _prompt_tuning_from_text(model, pc, tok, text: str):
    """Prompt tuning initialised from the embeddings of `text` (repeated or cut to the virtual
    tokens), as PEFT's TEXT init does, with the tokenizer we already hold."""
    from peft import PromptTuningInit, get_peft_model

    pc.prompt_tuning_init = PromptTuningInit.RANDOM
    peft_model = get_peft_model(model, pc)
    ids = tok(text, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
    n = pc.num_virtual_tokens
    ids = (ids * (n // len(ids) + 1))[:n]
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        enc = peft_model.prompt_encoder[peft_model.active_adapter].embedding
        enc.weight.copy_(emb[torch.tensor(ids)].detach().to(enc.weight.dtype))
    peft_model.peft_config[peft_model.active_adapter].prompt_tuning_init_text = text
    return peft_model


def parameter_counts(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total}


def load_adapter(adapter_dir: Path | str, base: Path | str | None = None):
    """(PeftModel in eval mode, tokenizer) from a saved adapter and its base (default: the base
    recorded in the adapter's config, the path `fmforge finetune --model` was given)."""
    import json

    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise InputNotFound(f"--adapter {adapter_dir}: adapter_config.json is missing (write one with "
                            "`fmforge finetune --method lora|prompt-tuning`)")
    if base is None:
        base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{cfg_file}: no base_model_name_or_path; pass the base model")
    b = load_base(base)
    return PeftModel.from_pretrained(b.model, str(adapter_dir)).eval(), b.tokenizer


def load_for_serving(adapter_dir: Path | str, base: Path | str | None = None):
    """(fmforge Transformer with the LoRA adapter folded in, tokenizers.Tokenizer): what
    fmforge's serve engine runs. Prompt-tuning adapters do not fold into weights."""
    from tokenizers import Tokenizer

    from fmforge.export.hf import from_hf_state, read_hf_config
    from fmforge.model.transformer import Transformer

    model, tok = load_adapter(adapter_dir, base)
    if model.peft_config[model.active_adapter].is_prompt_learning:
        raise UserError(f"--adapter {adapter_dir}: a prompt-tuning adapter cannot be folded into fmforge's "
                        "Transformer; serve it through transformers (fmforge.finetune.model.load_adapter)")
    merged = model.merge_and_unload()
    with tempfile.TemporaryDirectory(prefix="fmforge-serve-") as tmp:
        merged.config.save_pretrained(tmp)
        cfg = read_hf_config(Path(tmp))
    state = {k: v.detach().clone() for k, v in merged.state_dict().items()}
    net = Transformer(cfg)
    net.load_state_dict(from_hf_state(state, cfg, Path(adapter_dir)), strict=True)
    return net.eval(), Tokenizer.from_str(tok.backend_tokenizer.to_str())

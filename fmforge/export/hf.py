"""fmforge model <-> Hugging Face Llama / Qwen3 checkpoint folders.

fmforge's block is Llama's (RMSNorm, half-split RoPE, SwiGLU, GQA); with QK-norm it is
Qwen3's (per-head RMSNorm on q and k before RoPE). Only the fused weights differ:
`wqkv` is q|k|v stacked on the output dim, `w13` is gate|up. Export splits them, import
concatenates them back, so export -> import is bit-identical. A feature the target
architecture lacks is refused, never silently dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fmforge.config import ModelConfig
from fmforge.errors import InputNotFound, UserError
from fmforge.model.transformer import Transformer
from fmforge.outputs import atomic_write_text

SHARD_BYTES = 2 * 1024**3  # above this, model.safetensors is split into shards + an index
SUPPORTED = {"LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3", "MistralForCausalLM": "mistral"}


# model options Llama/Qwen3 cannot express: (field, how its value is written, what those models lack)
UNEXPORTABLE = [("logit_softcap", lambda v: f"{v:g}", "logit soft-capping"),
                ("value_embeds", str, "value embeddings"),
                ("unet_skips", lambda v: "true", "skip connections between blocks")]


def refuse_unexportable(cfg: ModelConfig, fmt: str) -> None:
    """A model whose outputs the format cannot reproduce is not exported (its users would get
    a different model without knowing it)."""
    for field, shown, lacks in UNEXPORTABLE:
        value = getattr(cfg, field)
        if value:  # None, 0 and False are "off"
            raise UserError(f"model.{field}={shown(value)}: {fmt}'s Llama/Qwen3 models have no {lacks}, so the "
                            "exported model would give other outputs; not exported. Serve it with `fmforge serve`, "
                            f"or train without model.{field}")


def hf_config(cfg: ModelConfig, bos_id: int | None, eos_id: int | None) -> dict:
    arch = "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"
    out = {
        "architectures": [arch], "model_type": SUPPORTED[arch],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.context_length, "rope_theta": cfg.rope_base, "rope_scaling": None,
        "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu", "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False, "attention_dropout": 0.0, "torch_dtype": "float32",
        "bos_token_id": bos_id, "eos_token_id": eos_id, "initializer_range": cfg.init_std,
    }
    if arch == "LlamaForCausalLM":
        out["mlp_bias"] = False
    else:  # Qwen3: every layer full attention, no sliding window
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    return out


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(cfg.n_layers):
        s, h = f"layers.{i}.", f"model.layers.{i}."
        wq, wk, wv = state[s + "attn.wqkv.weight"].split([q, kv, kv], dim=0)
        gate, up = state[s + "mlp.w13.weight"].chunk(2, dim=0)
        out.update({h + "self_attn.q_proj.weight": wq, h + "self_attn.k_proj.weight": wk,
                    h + "self_attn.v_proj.weight": wv, h + "self_attn.o_proj.weight": state[s + "attn.wo.weight"],
                    h + "mlp.gate_proj.weight": gate, h + "mlp.up_proj.weight": up,
                    h + "mlp.down_proj.weight": state[s + "mlp.w2.weight"],
                    h + "input_layernorm.weight": state[s + "attn_norm.weight"],
                    h + "post_attention_layernorm.weight": state[s + "mlp_norm.weight"]})
        if cfg.qk_norm:
            out[h + "self_attn.q_norm.weight"] = state[s + "attn.q_norm.weight"]
            out[h + "self_attn.k_norm.weight"] = state[s + "attn.k_norm.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, where: Path) -> dict[str, torch.Tensor]:
    def take(name):
        if name not in hf:
            raise UserError(f"{where}: tensor {name!r} is missing from the checkpoint")
        return hf.pop(name)

    out = {"embed.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take("lm_head.weight")
    else:
        hf.pop("lm_head.weight", None)  # some writers store the tied copy too
    for i in range(cfg.n_layers):
        s, h = f"layers.{i}.", f"model.layers.{i}."
        out[s + "attn.wqkv.weight"] = torch.cat([take(h + f"self_attn.{p}_proj.weight") for p in "qkv"], dim=0)
        out[s + "attn.wo.weight"] = take(h + "self_attn.o_proj.weight")
        out[s + "mlp.w13.weight"] = torch.cat([take(h + "mlp.gate_proj.weight"), take(h + "mlp.up_proj.weight")], 0)
        out[s + "mlp.w2.weight"] = take(h + "mlp.down_proj.weight")
        out[s + "attn_norm.weight"] = take(h + "input_layernorm.weight")
        out[s + "mlp_norm.weight"] = take(h + "post_attention_layernorm.weight")
        if cfg.qk_norm:
            out[s + "attn.q_norm.weight"] = take(h + "self_attn.q_norm.weight")
            out[s + "attn.k_norm.weight"] = take(h + "self_attn.k_norm.weight")
    hf = {k: v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}
    if hf:  # e.g. attention biases: fmforge's Transformer has no place for them
        raise UserError(f"{where}: tensor {sorted(hf)[0]!r} has no counterpart in fmforge's Transformer "
                        f"(biases and other extras are not supported); not imported")
    return out


def write_safetensors(state: dict[str, torch.Tensor], out: Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index above `shard_bytes`."""
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + n
    shards.append(cur)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for name, shard in zip(names, shards):
        tmp = out / f".{name}.tmp"
        save_file(shard, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, out / name)
    if len(shards) > 1:
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        atomic_write_text(out / "model.safetensors.index.json", json.dumps(index, indent=2))
        names.append("model.safetensors.index.json")
    return names


def read_hf_config(d: Path) -> ModelConfig:
    f = d / "config.json"
    if not f.is_file():
        raise InputNotFound(f"{d} is not a Hugging Face model folder: config.json is missing")
    try:
        c = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{f} is not readable JSON ({e})") from None
    arch = (c.get("architectures") or [None])[0]
    if arch not in SUPPORTED:
        raise UserError(f"{f}: architectures {arch!r} is not supported; fmforge imports {', '.join(SUPPORTED)}")
    refuse = {"rope_scaling": c.get("rope_scaling"), "attention_bias": c.get("attention_bias") or None,
              "mlp_bias": c.get("mlp_bias") or None,
              "sliding_window": c.get("sliding_window") if c.get("use_sliding_window", arch == "MistralForCausalLM")
              else None}
    if c.get("hidden_act", "silu") != "silu":
        refuse["hidden_act"] = c["hidden_act"]
    for k, v in refuse.items():
        if v:
            raise UserError(f"{f}: {k}={v!r} is a feature fmforge's Transformer does not have; not imported")
    n_heads, d = c["num_attention_heads"], c["hidden_size"]
    if c.get("head_dim") not in (None, d // n_heads):
        raise UserError(f"{f}: head_dim={c['head_dim']} differs from hidden_size/num_attention_heads; not supported")
    return ModelConfig(vocab_size=c["vocab_size"], d_model=d, n_layers=c["num_hidden_layers"], n_heads=n_heads,
                       n_kv_heads=c.get("num_key_value_heads") or n_heads, ffn_dim=c["intermediate_size"],
                       context_length=c.get("max_position_embeddings", 2048), rope_base=c.get("rope_theta", 10000.0),
                       norm_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                       qk_norm=arch == "Qwen3ForCausalLM")


def read_hf_state(d: Path) -> dict[str, torch.Tensor]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (d / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise InputNotFound(f"{d}: no model.safetensors (or index); only safetensors checkpoints are imported")
    state = {}
    for name in files:
        state.update(load_file(str(d / name)))
    return state


def load_hf_as_fmforge(d: Path | str):
    """(Transformer in eval mode, HF `tokenizers.Tokenizer` or None) from an HF folder."""
    d = Path(d)
    cfg = read_hf_config(d)
    state = from_hf_state(read_hf_state(d), cfg, d)
    model = Transformer(cfg)
    dtype = state["embed.weight"].dtype
    model.to(dtype).load_state_dict(state, strict=True)
    tok = None
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    return model.eval(), tok

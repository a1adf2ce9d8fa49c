"""`fmforge export --format hf`: an fmforge model folder -> a transformers-loadable folder."""
from __future__ import annotations

import json
from pathlib import Path

from fmforge.errors import InputNotFound, UserError
from fmforge.export.hf import SHARD_BYTES, hf_config, refuse_unexportable, to_hf_state, write_safetensors
from fmforge.model.weights import load_model
from fmforge.outputs import atomic_write_text
from fmforge.tokenizer.bpe import EOT, PAD
from fmforge.tokenizer.chat import CHAT_TEMPLATE


def model_dir(path: Path) -> Path:
    """A run folder means its final model (run/train); a checkpoint/model folder is itself."""
    path = Path(path)
    for d in (path, path / "train"):
        if (d / "model.safetensors").is_file() and (d / "model.json").is_file():
            return d
    raise InputNotFound(f"--model {path}: no model.safetensors + model.json there or in {path / 'train'}")


def _load(path: Path):
    """(folder the model belongs to, model): a model folder, a run, or a sharded training
    checkpoint (run/checkpoints/step-N, consolidated here into whole tensors)."""
    from fmforge.train import checkpoint

    if checkpoint.is_sharded(path):
        return path.parent.parent, checkpoint.consolidated_model(path)
    mdir = model_dir(path)
    return mdir, load_model(mdir)


def find_tokenizer(mdir: Path) -> Path | None:
    for d in (mdir, mdir.parent / "tokenizer", mdir.parent.parent / "tokenizer"):
        if (d / "tokenizer.json").is_file():
            return d / "tokenizer.json"
    return None


def export_hf(model: Path, out: Path, tokenizer: Path | None = None, shard_bytes: int = SHARD_BYTES) -> list[str]:
    from tokenizers import Tokenizer

    mdir, net = _load(Path(model))
    cfg = net.cfg
    refuse_unexportable(cfg, "Hugging Face")  # before anything is written
    tok_file = Path(tokenizer) if tokenizer else find_tokenizer(mdir)
    if tok_file is None or not tok_file.is_file():
        raise InputNotFound(f"no tokenizer.json beside {mdir} (or in ../tokenizer); pass --tokenizer FILE")
    tok = Tokenizer.from_file(str(tok_file))
    if tok.get_vocab_size() > cfg.vocab_size:
        raise UserError(f"{tok_file}: {tok.get_vocab_size()} tokens but the model has vocab_size {cfg.vocab_size}")
    eos, pad = tok.token_to_id(EOT), tok.token_to_id(PAD)
    written = write_safetensors(to_hf_state(net.state_dict(), cfg), out, shard_bytes)
    atomic_write_text(out / "config.json", json.dumps(hf_config(cfg, eos, eos), indent=2))
    atomic_write_text(out / "generation_config.json", json.dumps(
        {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad if pad is not None else eos,
         "do_sample": False, "max_length": cfg.context_length}, indent=2))
    atomic_write_text(out / "tokenizer.json", tok_file.read_text(encoding="utf-8"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT if eos is not None else None,
            "bos_token": None, "unk_token": None, "pad_token": PAD if pad is not None else EOT,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": cfg.context_length, "chat_template": CHAT_TEMPLATE}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tcfg, indent=2))
    atomic_write_text(out / "special_tokens_map.json", json.dumps(
        {k: tcfg[k] for k in ("eos_token", "pad_token") if tcfg[k]}, indent=2))
    atomic_write_text(out / "README.md", model_card(mdir, cfg, net))
    return written + ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "README.md"]


def run_facts(run: Path) -> list[tuple[str, str]]:
    """The run's data, size, tokens trained, evaluation and cost, as `fmforge run`'s report
    table has them, rebuilt from each stage's stage.json (so a run whose report is stale or
    absent still gets its card); [] when `run` holds no stage records."""
    from types import SimpleNamespace

    from fmforge.pipeline import STAGES, StageRun, build_report, report_rows

    runs = []
    for name in STAGES:
        f = run / name / "stage.json"
        try:
            summary = json.loads(f.read_text()).get("summary") if f.is_file() else None
        except ValueError:
            summary = None
        if isinstance(summary, dict):
            runs.append(StageRun(name, False, 0.0, summary))
    if not runs:
        return []
    report = build_report(SimpleNamespace(name=run.name, run_dir=run), runs, 0.0)
    rows = [(k, v) for k, v in report_rows(report)
            if not k.startswith("stage ") and k not in ("total time (s)", "data card") and v not in ("—", "— / —", "— → —")]
    try:  # where the data came from: the collect stage's settings
        data = json.loads((run / "collect" / "stage.json").read_text())["deps"]["data"]
        rows.insert(0, ("data sources", ", ".join(map(str, data["sources"])) +
                        (f" (files {', '.join(data['include'])})" if data.get("include") else "")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return rows


def model_card(mdir: Path, cfg, net) -> str:
    """Shape and parameters, then what the run's records say (data, tokens trained,
    evaluation, cost); a line says when there are none."""
    params = sum(p.numel() for p in net.parameters())
    run = mdir.parent if mdir.name == "train" else mdir
    lines = [f"# fmforge model: {run.name}", "",
             f"- architecture: {'Qwen3ForCausalLM' if cfg.qk_norm else 'LlamaForCausalLM'}, {params:,} parameters",
             f"- d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads ({cfg.kv_heads} KV), "
             f"context {cfg.context_length}, vocab {cfg.vocab_size}", ""]
    facts = run_facts(run)
    if facts:
        lines += [f"## Training run `{run.name}` (its stage records)", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in facts] + [""]
    else:
        lines += [f"No fmforge run records beside {mdir.name}/ (data, tokens trained, evaluation and cost "
                  "are unknown).", ""]
    lines += ["Exported by `fmforge export --format hf`; chat template: fmforge.tokenizer.chat.", ""]
    return "\n".join(lines)

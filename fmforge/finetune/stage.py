"""The pipeline's finetune stage (`fmforge run` with `finetune.enabled: true`): the recipe's
finetune section applied to the run's own model (or `finetune.model`), into runs/<name>/finetune/."""
from __future__ import annotations

import sys
from pathlib import Path

from fmforge.config import Recipe
from fmforge.errors import UserError

CORPUS_FUNCTIONS = "corpus-functions"


def run_finetune_stage(recipe: Recipe, run_dir: Path, out: Path, verbose: bool = True, resume: bool = False) -> dict:
    """`resume`: the pipeline found this stage interrupted with the same settings; continue
    from its newest checkpoint."""
    from fmforge.finetune.run import finetune

    cfg = recipe.finetune
    model = Path(cfg.model) if cfg.model else run_dir / "train"
    if not cfg.data:
        raise UserError("finetune.data: set a JSONL file of messages or prompt/completion rows (or "
                        f"'{CORPUS_FUNCTIONS}' for pairs from the run's prepared Python files)")
    data, eval_data = Path(cfg.data), Path(cfg.eval_data) if cfg.eval_data else None
    pairs = None
    if cfg.data == CORPUS_FUNCTIONS:
        from fmforge.finetune.model import load_base, within_context
        from fmforge.finetune.pairs import build_corpus_pairs

        base = load_base(model)
        data, eval_data = out / "pairs-train.jsonl", out / "pairs-eval.jsonl"
        # pairs that fit the length finetune() will use (finetune.max_length within the model's context)
        pairs = build_corpus_pairs(run_dir / "prepare", recipe.data.val_fraction, recipe.data.split_seed,
                                   base.tokenizer, within_context(cfg, base.model)[0].max_length, data, eval_data,
                                   cfg.seed)
        if verbose:
            print(f"[finetune] {pairs['train_pairs']:,} function pairs from {pairs['train_files']:,} training files, "
                  f"{pairs['eval_pairs']:,} from {pairs['eval_files']:,} held-out files", file=sys.stderr)
    rep = finetune(model, data, out, cfg, eval_data, verbose=verbose, resume=resume)
    if verbose:
        for s in rep["samples"]:
            print(f"[finetune] held-out sample, prompt:\n{s['prompt']}\n[finetune] base model:\n{s['base']}\n"
                  f"[finetune] tuned model:\n{s['tuned']}", file=sys.stderr)
    keep = ("method", "base_eval_loss", "tuned_eval_loss", "eval_examples", "eval_tokens", "train_examples",
            "trainable_params", "trainable_percent", "steps", "tokens", "tokens_per_s", "seconds", "peak_memory_gb",
            "outputs")
    return {**{k: rep[k] for k in keep}, "pairs": pairs,
            "sample": rep["samples"][0] if rep["samples"] else None}

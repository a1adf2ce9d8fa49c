"""`fmforge finetune` (mounted by fmforge.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fmforge.options import RecipeOpt, SetOpt, recipe_from, with_options


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="fmforge run / model / checkpoint folder, or a local "
                                                              "Hugging Face causal-LM folder"),
        data: Path = typer.Option(..., "--data", "-d", help="JSONL: {messages: [...]} or {prompt, completion} rows"),
        method: Optional[str] = typer.Option(None, "--method", help="full | lora | prompt-tuning (default: the "
                                                                     "recipe's finetune.method, lora)"),
        eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="held-out JSONL (default: a split of --data)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/finetune/<model>)"),
        merge: bool = typer.Option(False, "--merge", help="lora: also write OUT/merged/, the adapter folded in"),
        eval_task: Optional[str] = typer.Option(None, "--eval-task", help="a task metric before/after: exact-match "
                                                                          "(greedy completion = reference)"),
        tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer.json for a fmforge model "
                                                                           "(default: the run's)"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its newest checkpoint "
                                                             "(also after raising finetune.max_steps / epochs)"),
        recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt,
    ):
        """Fine-tune a pretrained causal LM: every weight, LoRA or prompt tuning (HF PEFT).

        Loss is on the assistant / completion tokens only, each ending in the end-of-sequence
        token. Held-out loss before and after goes to OUT/finetune_report.json and .md; the
        adapter to OUT/adapter/ (PEFT format). Settings: the recipe's finetune section
        (docs/finetune.md), e.g. --set finetune.lora.r=16 --set finetune.max_steps=200.
        Checkpoints go to OUT/checkpoints/ (every 10 minutes, on Ctrl-C / SIGTERM and at the end);
        the same command with --resume continues an interrupted run exactly.

        Examples:
          fmforge finetune --model runs/demo --data pairs.jsonl --method lora --out runs/ft
          fmforge finetune --model ./llama-hf --data chat.jsonl --method full --set finetune.lr=1e-5
          fmforge finetune --model runs/demo --data pairs.jsonl --method lora --out runs/ft --resume
        """
        from fmforge.finetune.run import finetune
        from fmforge.outputs import claimed, locked, need

        r = recipe_from(recipe, set_)
        cfg = with_options(r.finetune, {"method": ("--method", method), "merge": ("--merge", merge or None),
                                        "eval_task": ("--eval-task", eval_task)})
        need(model, "--model")
        need(data, "--data")
        if eval_data is not None:
            need(eval_data, "--eval-data")
        out = out or Path(r.out_dir) / "finetune" / model.resolve().name
        inputs = [model, data] + ([eval_data] if eval_data else []) + ([tokenizer] if tokenizer else [])
        with claimed(out, "finetune", inputs) as od, locked(out):
            od.record(["checkpoints"])  # before training: an interrupted run leaves them, and they are ours
            rep = finetune(model, data, od.path, cfg, eval_data, tokenizer, resume=resume)
            od.record(["finetune_report.json", "finetune_report.md", "metrics.jsonl", *rep["outputs"].values()])
        typer.echo(f"held-out loss {rep['base_eval_loss']:.4f} -> {rep['tuned_eval_loss']:.4f}; "
                   f"trainable {rep['trainable_params']:,} ({rep['trainable_percent']:.3f}%); "
                   f"{rep['tokens_per_s']:,.0f} tokens/s; wrote {out}/finetune_report.md")
        for s in rep["samples"]:
            typer.echo(f"--- sample (held out) ---\n{s['prompt']}\n--- tuned ---\n{s['tuned']}")

"""The command line: one verb per pipeline stage, plus `run` for all of them.

Every verb takes `--recipe` (a YAML file or a built-in recipe name) and `--set k=v`
overrides; what the user gets wrong is reported in one paragraph with exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fmforge.config import recipe_to_yaml
from fmforge.errors import UserError
from fmforge.options import RecipeOpt, SetOpt, recipe_from

app = typer.Typer(
    help="fmforge: build your own language foundation model — collect, prepare, tokenize, "
    "pretrain, evaluate, deploy, customize, cost.\n\nExample: fmforge run   (the whole pipeline on "
    "the built-in demo corpus, minutes on a CPU)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show and check recipes.\n\nExamples:\n  fmforge config show --recipe recipes/demo.yaml"
                              "\n  fmforge config check my-recipe.yaml --set train.max_steps=50",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)


# ------------------------------------------------------------------ run / config


@app.command()
def run(recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt,
        force: bool = typer.Option(False, "--force", help="redo every stage, even those up to date"),
        resume: bool = typer.Option(False, "--resume", help="when only the training budget changed, continue the "
                                                            "run from its newest checkpoint instead of starting afresh")):
    """Run every stage of a recipe: collect, prepare, tokenizer, train, eval, sample.

    Stages whose inputs and settings are unchanged since the last run are skipped; an
    interrupted stage resumes; a changed one starts afresh (docs/stages.md).
    Outputs go to runs/<recipe name>/ with report.json and report.md.

    Examples:
      fmforge run
      fmforge run --recipe recipes/demo.yaml --set train.max_steps=50
    """
    from fmforge.pipeline import Pipeline, report_rows

    r = recipe_from(recipe, set_)
    pipeline = Pipeline(r, force=force, resume=resume)
    report = pipeline.run_all()
    if not pipeline.is_main:  # under torchrun, rank 0 reports
        return
    table = Table(title=f"fmforge run: {r.name}  →  {r.run_dir}/report.json", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in report_rows(report):
        table.add_row(k, v)
    console.print(table)
    console.print(f"[bold]sample[/bold] ({len(report.get('sample') or '')} chars):")
    console.print((report.get("prompt") or "") + (report.get("sample") or ""), markup=False, highlight=False)


@config_app.command("show")
def config_show(recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Print the resolved recipe (defaults filled in, presets applied, overrides applied).

    Example: fmforge config show --recipe recipes/demo.yaml --set model.d_model=512
    """
    sys.stdout.write(recipe_to_yaml(recipe_from(recipe, set_)))


@config_app.command("check")
def config_check(path: Optional[str] = typer.Argument(None, metavar="[RECIPE]", help="recipe YAML file or built-in "
                                                                                      "name (or --recipe)"),
                 recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Validate a recipe without running anything (exit 0 valid, 2 invalid).

    The recipe is checked as every verb loads it (extends, preset, then each --set); an
    invalid one is reported with the field and the reason.

    Example: fmforge config check recipes/demo.yaml --set train.max_steps=50
    """
    if path is not None and recipe is not None and path != recipe:
        raise UserError(f"two recipes given ({path} and --recipe {recipe}): give one")
    r = recipe_from(path or recipe, set_)
    console.print(f"recipe {escape(path or recipe or 'demo')}: valid (name {escape(r.name)}, run folder "
                  f"{escape(str(r.run_dir))})", highlight=False)


# ------------------------------------------------------------------ train / eval


@app.command()
def train(recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt,
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/<name>/train)"),
          resume: bool = typer.Option(False, "--resume", help="continue the run from its newest checkpoint, also when "
                                                               "the budget was raised (an interrupted run of the same "
                                                               "settings resumes without it)")):
    """Pretrain the recipe's model on its token shards (earlier stages run first if needed).

    Writes metrics.jsonl, checkpoints/ and model.safetensors to the output folder.

    Examples:
      fmforge train --recipe recipes/demo.yaml --set train.max_steps=200
      fmforge train --recipe recipes/gpt2-124m.yaml --out runs/gpt2 --resume
    """
    from fmforge.outputs import claimed, locked
    from fmforge.pipeline import Pipeline

    r = recipe_from(recipe, set_)
    p = Pipeline(r, resume=resume)
    if out is None:
        p.run_stages(["collect", "prepare", "tokenizer", "train"])
        return
    p.run_stages(["collect", "prepare", "tokenizer"], close=False)
    if p.is_main:
        with claimed(out, "train", [p.stage_dir("tokenizer"), p.stage_dir("prepare")]), locked(out):
            res = p.train(out)
        p.close()
        console.print_json(json.dumps(res.summary))
    else:
        p.train(out)
        p.close()


@app.command("eval")
def eval_(recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt,
          model: Optional[Path] = typer.Option(None, "--model", help="a run, train folder, checkpoint or Hugging Face "
                                                                     "folder to evaluate (instead of the recipe's run)"),
          task: Optional[List[str]] = typer.Option(None, "--task", help="NAME or NAME=FILE; repeat (default eval.tasks)"),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="with --model: folder for eval.json, eval.md"),
          per_item: bool = typer.Option(False, "--per-item", help="also write items/NAME.jsonl (choice log-likelihoods)"),
          limit: Optional[int] = typer.Option(None, "--limit", help="the first N items of each task"),
          text: Optional[List[Path]] = typer.Option(None, "--text", help="held-out text/JSONL file(s) for loss and bpb"),
          device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if present)")):
    """Evaluate a trained run on its held-out documents: loss, bits per byte, gzip/xz baselines;
    with --model, any model on downstream tasks (docs/eval.md).

    Examples:
      fmforge eval --recipe recipes/demo.yaml
      fmforge eval --model runs/demo --task hellaswag --task arc_easy=arc.jsonl --out runs/demo-eval --per-item
    """
    from fmforge.pipeline import Pipeline

    r = recipe_from(recipe, set_)
    if model is not None:
        from fmforge.eval.commands import eval_model

        if out is None:
            raise UserError("--model needs --out (a new or empty folder for eval.json)")
        res = eval_model(model, list(task or r.eval.tasks), out, r.eval, per_item, limit, list(text or []), device)
        console.print_json(json.dumps({"tasks": res["tasks"], "core": res["core"], "lm": res["lm"]}))
        return
    given = [flag for flag, v in (("--task", task), ("--out", out), ("--per-item", per_item), ("--limit", limit),
                                  ("--text", text), ("--device", device)) if v]
    if given:  # the run's eval stage takes none of them: say so rather than drop them unnoticed
        raise UserError(f"{', '.join(given)}: only with --model (e.g. --model {r.run_dir}); the run's own "
                        "evaluation takes its settings from the recipe (--set eval.tasks=[hellaswag], ...)")
    p = Pipeline(r)
    p.run_stages(["collect", "prepare", "tokenizer", "train", "eval"])
    console.print_json(json.dumps(p.runs[-1].summary))


@app.command()
def sample(recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt,
           prompt: Optional[str] = typer.Option(None, "--prompt", help="text to complete (default: eval.prompt)")):
    """Complete a prompt with a trained run's model.

    Example: fmforge sample --prompt 'def quicksort(xs):' --set eval.temperature=0.8
    """
    from fmforge.eval.generate import generate
    from fmforge.tokenizer.bpe import EOT, load
    from fmforge.model.weights import load_model

    r = recipe_from(recipe, set_)
    text = prompt if prompt is not None else r.eval.prompt
    model = load_model(r.run_dir / "train")
    tok = load(r.run_dir / "tokenizer")
    ids = [tok.token_to_id(EOT)] + tok.encode(text, add_special_tokens=False).ids
    out = generate(model, ids, r.eval.max_new_tokens, r.eval.temperature, r.eval.top_k, stop_id=tok.token_to_id(EOT))
    console.print(text + tok.decode(out), markup=False, highlight=False)


def _mount_stage_apps() -> None:
    """Verbs live with their stage. A stage module `commands` either holds `app` (a Typer app
    of sub-commands, mounted under the verb) or `register(app)` (adds plain verbs to ours).
    A stage whose commands module does not exist yet adds nothing."""
    import importlib

    for verb, module in (("data", "fmforge.data.commands"), ("tokenizer", "fmforge.tokenizer.commands"),
                         ("cost", "fmforge.cost.commands"), (None, "fmforge.eval.commands"),
                         (None, "fmforge.export.commands"), (None, "fmforge.serve.commands"),
                         (None, "fmforge.finetune.commands")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real missing dependency, not a stage still to come
                raise
            continue
        if hasattr(mod, "register"):
            mod.register(app)
        else:
            app.add_typer(mod.app, name=verb)


_mount_stage_apps()


def main() -> None:
    """User errors (fmforge.errors.UserError and its kinds) are one line and exit 2;
    training stopped by SIGINT/SIGTERM exits 130/143 after saving a checkpoint; another
    interrupt exits 130; anything else is a bug and keeps its traceback."""
    from fmforge.train.signals import TrainingInterrupted

    try:
        app()
    except TrainingInterrupted as e:  # the trainer said where its checkpoint is
        sys.exit(e.exit_code)
    except UserError as e:
        # soft_wrap: one line however long (rich wraps at 80 columns when piped); escape: a
        # message quoting "phases[0]" or a file name with brackets is text, not markup
        err.print(f"[bold red]error:[/bold red] {escape(' '.join(str(e).split()))}", markup=True, highlight=False,
                  soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit 130: say why the command stopped
        if e.code == 130 and _from_interrupt(e):
            err.print("interrupted")
        raise


def _from_interrupt(e: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions `e` was raised from or during."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


if __name__ == "__main__":
    main()

"""Downstream tasks during training: every `eval.every_steps` steps the trainer scores
`eval.tasks` (the first `eval.train_task_limit` items of each; code tasks are left to the
eval stage, they generate and execute) and writes one metrics.jsonl line
{"eval": {"step", "tasks": {NAME: {acc, acc_norm, n}}, "core"}}.

Items are read and tokenized once, at the start. Single-process only: under FSDP every
rank would have to run the same forward passes, which is the eval stage's job."""
from __future__ import annotations

from pathlib import Path

import torch

from fmforge.config import Recipe
from fmforge.eval.harness import core_score, score_task
from fmforge.eval.loglik import LM
from fmforge.eval.tasks import resolve


class TaskEval:
    def __init__(self, recipe: Recipe, tokenizer_json: Path):
        from fmforge.tokenizer.bpe import EOT, load

        e = recipe.eval
        self.every = e.every_steps
        self.tok = load(tokenizer_json)
        self.prefix = [self.tok.token_to_id(EOT)]
        self.batch_tokens = e.batch_tokens
        self.tasks = []
        for spec in e.tasks:
            task, path = resolve(spec)
            if task.kind != "code":
                self.tasks.append((task, task.load(path)[: e.train_task_limit]))

    @classmethod
    def for_training(cls, recipe: Recipe, tokens_dir: Path, world: int) -> "TaskEval | None":
        e = recipe.eval
        if not (e.every_steps and e.tasks) or world > 1:
            return None
        return cls(recipe, Path(tokens_dir).parent / "tokenizer.json")

    def due(self, step: int) -> bool:
        return bool(self.tasks) and step % self.every == 0

    @torch.no_grad()
    def __call__(self, model, step: int, autocast=None) -> dict:
        was_training = model.training
        base = getattr(model, "_orig_mod", model)  # scoring calls hidden(), not the compiled forward
        lm = LM(base, self.tok, self.prefix, False, self.batch_tokens, autocast)
        tasks = {}
        for task, items in self.tasks:
            m = score_task(lm, task, items).metrics
            tasks[task.name] = {k: m[k] for k in ("acc", "acc_norm", "n", "chance", "core_metric")}
        model.train(was_training)
        return {"step": step, "tasks": tasks, "core": core_score(tasks)}

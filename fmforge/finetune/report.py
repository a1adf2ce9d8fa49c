"""finetune_report.md: before and after side by side, what was trained, what it cost."""
from __future__ import annotations


def _f(x, fmt: str = "{:.4f}") -> str:
    return "—" if x is None else fmt.format(x)


def report_markdown(r: dict) -> str:
    d = r["data"]["train"]
    drop = r["base_eval_loss"] - r["tuned_eval_loss"]
    lines = [
        f"# fmforge finetune: {r['method']} of {r['model']}", "",
        "| held-out completion loss (nats/token) | base | tuned | change |", "|---|---|---|---|",
        f"| {r['eval_examples']:,} examples, {r['eval_tokens']:,} tokens | {r['base_eval_loss']:.4f} | "
        f"{r['tuned_eval_loss']:.4f} | {-drop:+.4f} |",
        f"| token accuracy (teacher-forced) | {r['base_token_accuracy']:.2%} | {r['tuned_token_accuracy']:.2%} | "
        f"{r['tuned_token_accuracy'] - r['base_token_accuracy']:+.2%} |",
    ]
    if r.get("base_task"):
        b, t = r["base_task"], r["tuned_task"]
        lines.append(f"| {b['task']} ({b['examples']} examples) | {b['score']:.2%} | {t['score']:.2%} | "
                     f"{t['score'] - b['score']:+.2%} |")
    lines += [
        "",
        "| | |", "|---|---|",
        f"| model | {r['architecture']} ({r['model_source']}) |",
        f"| data | {d['path']}: {d['rows']:,} rows, {d['bad_rows']:,} bad, {d['truncated']:,} prompts truncated |",
        f"| training examples / rows | {r['train_examples']:,} / {r['train_rows']:,} |",
        f"| trainable parameters | {r['trainable_params']:,} of {r['total_params']:,} ({r['trainable_percent']:.3f}%) |",
        f"| steps | {r['steps']:,} |",
        f"| tokens (trained on) | {r['tokens']:,} ({r['trained_tokens']:,}) |",
        f"| tokens/s | {r['tokens_per_s']:,.0f} |",
        f"| peak memory (GB) | {_f(r['peak_memory_gb'], '{:.2f}')} ({r['memory_kind']}) |",
        f"| device | {r['device']} {r['accelerator'] or ''}, {r['precision']} |",
        f"| cost | {r['cost']['device_hours']:.4f} device-hours"
        + (f", ${r['cost']['usd']:.4f}" if r['cost']['usd'] is not None else "") + " |",
        f"| outputs | {', '.join(r['outputs'].values())} |", "",
    ]
    if r["bad_rows"]:
        lines += ["## Bad rows", ""] + [f"- {b['file']} line {b['line']}: {b['reason']}" for b in r["bad_rows"][:20]]
        lines.append("")
    for i, s in enumerate(r["samples"], 1):
        lines += [f"## Sample {i} (held out)", "", "Prompt:", "", "```", s["prompt"], "```", "",
                  "Base:", "", "```", s["base"], "```", "", "Tuned:", "", "```", s.get("tuned", ""), "```", "",
                  "Reference:", "", "```", s["reference"], "```", ""]
    return "\n".join(lines)

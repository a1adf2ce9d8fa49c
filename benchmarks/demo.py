"""The demo, as `make demo` runs it, and the customization demo after it: one result file.

Runs `fmforge run` (the built-in demo recipe on the default corpus) and, with --finetune,
`fmforge run --recipe recipes/demo-finetune.yaml` (the demo's model reused, LoRA on the
corpus's function pairs) in a work folder (`out_dir`), each as the user would, through the
CLI. Records the pipeline's report (documents, tokens, params, tokens/s, held-out bits/byte
beside per-file gzip -9 and xz -9e, which the eval stage computes on the same files in the
same run) and the fine-tune's held-out completion loss of the base model beside the tuned one.

    .venv/bin/python benchmarks/demo.py --finetune                  # ~16 min on 2 cores
    .venv/bin/python benchmarks/demo.py --set train.max_tokens=20000 --out /tmp/d.json   # a quick look

Writes benchmarks/results/demo-<date>.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import provenance, write_result  # noqa: E402

FINETUNE_KEYS = ("method", "base_eval_loss", "tuned_eval_loss", "base_token_accuracy", "tuned_token_accuracy",
                 "eval_examples", "eval_tokens", "train_examples", "trainable_params", "trainable_percent", "steps",
                 "tokens", "tokens_per_s", "samples")


def fmforge(args: list[str], cwd: Path) -> float:
    """Run one CLI command (its output shown), return its wall time; a failure stops the benchmark."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fmforge", *args], cwd=cwd)
    if p.returncode != 0:
        raise SystemExit(f"fmforge {' '.join(args)} exited {p.returncode}")
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fmforge-demo-bench"),
                    help="out_dir of the runs (emptied first when it holds a previous run of this script)")
    ap.add_argument("--finetune", action="store_true", help="also run recipes/demo-finetune.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override for both runs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    header = provenance(args)
    marker = args.work / ".fmforge-demo-bench"
    if args.work.exists():
        if not marker.exists():
            raise SystemExit(f"{args.work} exists and was not made by this script: give another --work")
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    marker.write_text("made by benchmarks/demo.py\n")
    sets = [x for s in [f"out_dir={args.work}", *args.sets] for x in ("--set", s)]

    figures: dict = {"wall_s": {"run": round(fmforge(["run", *sets], args.work), 2)}}
    run_dir = args.work / "demo"
    figures["report"] = json.loads((run_dir / "report.json").read_text())
    if args.finetune:
        recipe = str(ROOT / "recipes" / "demo-finetune.yaml")
        figures["wall_s"]["finetune_run"] = round(fmforge(["run", "--recipe", recipe, *sets], args.work), 2)
        ft = json.loads((run_dir / "finetune" / "finetune_report.json").read_text())
        figures["finetune"] = {k: ft[k] for k in FINETUNE_KEYS if k in ft}
    path = write_result("demo", header, figures, args.out)
    r = figures["report"]
    print(f"val bits/byte {r['val_bpb']:.4f} (gzip {r['gzip_bpb']:.4f}, xz {r['xz_bpb']:.4f}), "
          f"{r['tokens_trained']:,} tokens at {r['tokens_per_s']:,.0f} tok/s")
    if args.finetune:
        f = figures["finetune"]
        print(f"fine-tune held-out loss: base {f['base_eval_loss']:.4f} -> tuned {f['tuned_eval_loss']:.4f}")
    print("->", path)


if __name__ == "__main__":
    main()

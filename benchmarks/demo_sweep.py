"""Sweep variants of the demo recipe side by side, each on its own pair of CPU cores.

The data stages run once; every variant then trains for the same wall-clock budget
pinned to 2 cores (as on the 2-core machine the demo targets) and is scored on the same
held-out files. Used to choose the demo's model and optimizer (docs/LOG.md).

    python benchmarks/demo_sweep.py --budget 180 --out sweep.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

MUON = ["train.optimizer=muon", "model.qk_norm=true", "train.lr=0.006", "train.schedule=wsd",
        "train.min_lr_ratio=0.0", "train.weight_decay=0.0"]
VARIANTS = {
    "adamw-3e-3": [],
    "adamw-6e-3-wsd": ["train.lr=0.006", "model.qk_norm=true", "train.schedule=wsd", "train.min_lr_ratio=0.0"],
    "muon": MUON,
    "muon-d192": MUON + ["model.d_model=192", "model.n_heads=3"],
    "muon-d320-l5": MUON + ["model.d_model=320", "model.n_layers=5", "model.n_heads=5"],
    "muon-ctx512": MUON + ["model.context_length=512", "train.micro_batch=8"],
    "muon-b32": MUON + ["train.micro_batch=32"],
    "muon-compiled": MUON + ["train.compile=on"],
    "muon-d192-compiled": MUON + ["train.compile=on", "model.d_model=192", "model.n_heads=3"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=180.0, help="training seconds per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--first-core", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    header = provenance(a)
    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline

    base = load_recipe(None, ["name=sweep-base"])
    p = Pipeline(base)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    procs = {}
    for i, name in enumerate(a.variants.split(",")):
        run = f"sweep-{name}"
        d = base.run_dir.parent / run
        d.mkdir(parents=True, exist_ok=True)
        for stage in ("collect", "prepare", "tokenizer"):
            link = d / stage
            if not link.exists():
                link.symlink_to(Path("..") / "sweep-base" / stage)
        c = a.first_core + 2 * i
        sets = [f"name={run}", f"train.time_budget_s={a.budget}", "train.threads=2", "train.device=cpu", *VARIANTS[name]]
        cmd = ["taskset", "-c", f"{c},{c + 1}", sys.executable, "-m", "fmforge", "run"]
        for s in sets:
            cmd += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env), d)
    results = []
    for name, (proc, d) in procs.items():
        _, err = proc.communicate()
        if proc.returncode:
            results.append({"variant": name, "error": err[-1500:]})
            print(f"{name}: FAILED {err[-800:]}", flush=True)
            continue
        r = json.loads((d / "report.json").read_text())
        row = {"variant": name, "sets": VARIANTS[name], **{k: r[k] for k in
               ("val_bpb", "gzip_bpb", "xz_bpb", "params", "tokens_trained", "tokens_per_s", "train_seconds")}}
        results.append(row)
        print(f"{name:16s} bpb {row['val_bpb']:.4f} (gzip {row['gzip_bpb']:.4f})  {row['tokens_trained']:>10,} tokens "
              f"{row['tokens_per_s']:>8,.0f} tok/s  {row['params']:,} params", flush=True)
    path = write_result("demo_sweep", header, {"budget_s": a.budget, "cores_per_run": 2, "results": results}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

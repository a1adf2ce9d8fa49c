"""What a run tells the user: metrics.jsonl, TensorBoard, and the progress line. Only the
main rank writes; on the others every method is a no-op, so the loop calls them unguarded.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class ProgressLine:
    """One live line on a terminal (step, loss, tokens/s, ETA); a line every 10 s in a log."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty, self.last = enabled, sys.stderr.isatty(), 0.0

    def update(self, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self.last >= 10:
            print(text, file=sys.stderr, flush=True)
            self.last = now


def tensorboard_writer(out_dir: Path):
    """TensorBoard event files in <out>/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint we resume from, so the file reads as one run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        s = rec.get("step", rec.get("eval", {}).get("step", 0))
        if s <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


class Metrics:
    """metrics.jsonl (+ TensorBoard) and the progress line, written by the main rank only."""

    def __init__(self, out_dir: Path, is_main: bool, verbose: bool, resume_step: int | None):
        self.is_main, self.verbose = is_main, verbose and is_main
        self.path = Path(out_dir) / "metrics.jsonl"
        self.line = ProgressLine(self.verbose)
        self.file = self.tb = None
        if not is_main:
            return
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():  # --resume with no checkpoint yet: a fresh start
            self.path.unlink()
        self.file = open(self.path, "a")
        self.tb = tensorboard_writer(Path(out_dir))

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """Shown also when not verbose (a skipped step, an interruption)."""
        if self.is_main:
            print(text, file=sys.stderr, flush=True)

    def step(self, rec: dict, write: bool) -> None:
        if self.file is None or not write:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if rec.get(k) is not None:
                    self.tb.add_scalar(f"train/{k}", rec[k], rec["step"])

    def eval(self, val: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"eval": val}) + "\n")
        self.file.flush()
        if self.tb is not None and "val_loss" in val:  # downstream-task lines carry no val loss
            self.tb.add_scalar("val/loss", val["val_loss"], val["step"])
            self.tb.add_scalar("val/bpb", val["val_bpb"], val["step"])

    def progress(self, text: str, final: bool = False) -> None:
        self.line.update(text, final)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.file is not None:
            self.file.close()
            self.file = None

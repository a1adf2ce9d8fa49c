"""One result writer for every benchmark: what ran, where, on which code, with which arguments.

A result file is what one command wrote (never merged by hand). Each holds, beside the
benchmark's own figures:
  date (UTC, ISO), hardware (CPU model, cores usable, memory, GPU name and count),
  python, torch and the benchmark's peers' versions, commit and whether the tree was dirty,
  the full command line and parsed arguments, and whether torch.compile's cache was warm.

On the GPU machine the tree travels without .git: the caller passes the commit and the
dirty flag in FMFORGE_COMMIT / FMFORGE_DIRTY (``git rev-parse --short HEAD`` and
``git status --porcelain`` taken where the call was made).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def commit() -> dict:
    """{"commit": short hash, "dirty": bool or None when unknown}."""
    rev = os.environ.get("FMFORGE_COMMIT") or _git("rev-parse", "--short", "HEAD")
    env_dirty = os.environ.get("FMFORGE_DIRTY")
    if env_dirty is not None:
        dirty: bool | None = env_dirty.strip().lower() not in ("", "0", "false", "no")
    else:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"commit": rev or "unknown", "dirty": dirty}


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"cpu": cpu, "cores_usable": len(os.sched_getaffinity(0)), "cores_online": os.cpu_count(),
          "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
          "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name()
        hw["gpus"] = torch.cuda.device_count()
    return hw


def versions(peers: tuple[str, ...] = ()) -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", *peers):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def compile_cache() -> str:
    """'warm' when torch.compile's on-disk cache already held entries before this run."""
    d = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir()) /
             f"torchinductor_{os.environ.get('USER', 'root')}")
    try:
        return "warm" if d.is_dir() and any(d.iterdir()) else "cold"
    except OSError:
        return "unknown"


def provenance(args=None, peers: tuple[str, ...] = ()) -> dict:
    """The header every result file starts with. Call it at the start of a run (the load
    average and the compile cache are read then)."""
    parsed = vars(args) if args is not None and hasattr(args, "__dict__") else (args or {})
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hardware": hardware(), "versions": versions(peers), **commit(),
            "argv": sys.argv[1:], "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in parsed.items()},
            "compile_cache": compile_cache()}


def write_result(name: str, header: dict, figures: dict, out: Path | str | None = None) -> Path:
    """Write {header..., **figures} to `out` (a file), or to results/<name>-<date>.json,
    atomically; an existing file of the same day is kept and the new one numbered."""
    if out is not None:
        path = Path(out)
    else:
        day = header["date"][:10]
        path = RESULTS / f"{name}-{day}.json"
        n = 2
        while path.exists():
            path = RESULTS / f"{name}-{day}-{n}.json"
            n += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    hw = header.get("hardware", {})
    torch = sys.modules.get("torch")
    if "gpu" not in hw and torch is not None and torch.cuda.is_available():  # CUDA came up after the header
        hw["gpu"], hw["gpus"] = torch.cuda.get_device_name(), torch.cuda.device_count()
    body = {"benchmark": name, **header, **figures}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path

"""Where prepare's phase-1 tasks run.

- ``local``: a pool of worker processes on this machine (``workers``; 1 runs in-process).
  We measured datatrove's LocalPipelineExecutor for this and kept our own pool: the same
  parallelism, without its per-rank logging folders and completion files, which our
  per-task output files already provide (docs/LOG.md).
- ``ray``: datatrove's RayPipelineExecutor, the engine users already run at scale, on the
  Ray cluster at ``data.ray_address`` (or a local one). Each Ray rank takes every
  world_size-th task; tasks already written are skipped, so reruns resume.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from fmforge.data.tasks import run_task, task_path
from fmforge.progress import Progress
from fmforge.workers import context


@contextmanager
def worker_pool(workers: int):
    """One pool of worker processes for every phase of a prepare run (they start once and
    stay: starting one costs about a CPU-second of imports); None for a single worker."""
    if workers <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context(["fmforge.data.preload"]))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_tasks(tasks: list, cfg, work: Path, workers: int, pool=None, progress: bool = False) -> None:
    """Phase 1: every task not done yet. `tasks`: (shard, first row, end row, text bytes)."""
    todo = [i for i in range(len(tasks)) if not task_path(work, i).exists()]
    if not todo:
        return
    cfg_json = cfg.model_dump_json()
    if cfg.executor == "ray":
        return _run_ray(tasks, todo, cfg_json, work, workers, cfg.ray_address, cfg.strict)
    bar = Progress("prepare", len(todo), sum(tasks[i][3] for i in todo), enabled=progress)
    if pool is None or len(todo) == 1:
        for i in todo:
            run_task(i, tasks[i], cfg_json, str(work), cfg.strict)
            bar.update(tasks[i][3], tasks[i][2] - tasks[i][1])
        return
    # largest first: a big task started last would leave the other workers idle at the end
    todo.sort(key=lambda i: -tasks[i][3])
    futures = {pool.submit(run_task, i, tasks[i], cfg_json, str(work), cfg.strict): i for i in todo}
    try:
        for f in as_completed(futures):
            f.result()  # re-raises a worker's error here
            i = futures[f]
            bar.update(tasks[i][3], tasks[i][2] - tasks[i][1])
    except BaseException:
        for f in futures:
            f.cancel()
        raise


class _RayStep:
    """A datatrove pipeline step (callable(data, rank, world_size)) that runs our tasks."""

    def __init__(self, tasks, todo, cfg_json, work, strict):
        self.tasks, self.todo, self.cfg_json, self.work, self.strict = tasks, todo, cfg_json, work, strict

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        for i in self.todo[rank::world_size]:
            run_task(i, self.tasks[i], self.cfg_json, self.work, self.strict)
        return iter(())


def _run_ray(tasks, todo, cfg_json, work: Path, workers: int, address: str | None, strict: bool) -> None:
    try:
        import ray
        from datatrove.executor.ray import RayPipelineExecutor
    except ImportError as e:
        raise RuntimeError("data.executor=ray needs the ray extra: pip install 'fmforge[ray]'") from e
    started = False
    if not ray.is_initialized():
        import fmforge

        root = str(Path(fmforge.__file__).resolve().parent.parent)
        # workers import fmforge from this checkout even when it is not installed
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root}}, log_to_driver=False)
        started = True
    try:
        world = min(len(todo), max(1, workers))
        executor = RayPipelineExecutor(pipeline=[_RayStep(tasks, todo, cfg_json, str(work), strict)], tasks=world,
                                       workers=world, logging_dir=str(work / "ray-logs"), skip_completed=False,
                                       cpus_per_task=1, mem_per_cpu_gb=1)
        executor.run()
    finally:
        if started:
            ray.shutdown()
    missing = [i for i in todo if not task_path(work, i).exists()]
    if missing:
        raise RuntimeError(f"ray executor finished with {len(missing)} tasks not done; see {work / 'ray-logs'}")

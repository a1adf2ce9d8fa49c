"""The Slurm script of docs/distributed.md must deliver the early SIGTERM to torchrun."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "distributed.md"


def test_slurm_example_signals_the_job_step_not_only_the_batch_shell():
    """`#SBATCH --signal=B:TERM@300` sends SIGTERM to the batch shell alone (sbatch(1): "B:
    signal only the batch shell, none of the other processes will be signaled"); the shell
    waits on `srun` in the foreground and passes nothing on, so torchrun never saw the early
    signal the script promises and no checkpoint was saved before the time limit."""
    script = DOC.read_text().split("## Slurm", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    sig = re.search(r"^#SBATCH --signal=(\S+)", script, re.M)
    assert sig is not None, "the Slurm example sets no early signal"
    assert not sig.group(1).startswith("B:"), sig.group(0)
    assert re.search(r"^srun torchrun ", script, re.M), "torchrun must run as the job step that receives it"

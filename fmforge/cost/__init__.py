"""fmforge.cost: what training and serving a model costs, before and after the fact.

No torch here: the arithmetic runs anywhere. `run_cost` states what a finished run cost; the
`fmforge cost` commands (fmforge.cost.commands) sit on fmforge.cost.estimate, .memory, .plan
and .serving.
"""
from fmforge.cost.estimate import CostError, run_cost
from fmforge.cost.published import default_mfu, mfu_prior

__all__ = ["CostError", "default_mfu", "mfu_prior", "run_cost"]

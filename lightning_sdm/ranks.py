"""Which process of a launch this is, before any Trainer exists to say so.

Launchers name a process's rank in the environment: Lightning's own (re-running the
command with LOCAL_RANK and NODE_RANK), torchrun (RANK), SLURM's srun (SLURM_PROCID) and
LSF's jsrun (JSM_NAMESPACE_RANK). Work done once per launch (clearing what a killed run
left, locking an output folder) is done by the process that all of them call 0.
"""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_first_process() -> bool:
    """True unless a launcher named this process other than the first."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)

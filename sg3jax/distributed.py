"""Joining a multi-host job: every host runs the same program, and `jax.distributed.initialize()` makes their
devices one set of global devices before anything runs on them.

Gated by SG3JAX_DISTRIBUTED=1 (as big_vision gates it with BV_JAX_INIT): on Cloud TPU, SLURM and Open MPI JAX
finds the coordinator, process count and process id itself, but on a single host outside a cluster the call
fails. launch/tpu_pod.sh and launch/slurm.sbatch set the variable; launch/local.sh leaves it unset.
"""

import os

import jax


def maybe_initialize():
    """jax.distributed.initialize() when SG3JAX_DISTRIBUTED=1; call it first, before any array exists."""
    if os.environ.get('SG3JAX_DISTRIBUTED') == '1':
        jax.distributed.initialize()

"""The environment of the programs the tests start (training runs, the command-line tools; not collected).

A plain CPU user run: one device (none of the test session's 8 simulated ones), no jax.distributed, and XLA's
CPU backend at optimisation level 0. Those runs are tiny and short, so compiling is nearly all of their time, and
level 0 halves it (the tiny StyleGAN2 G step: 8.4 -> 5.0 s, its initialisation 6.2 -> 2.4 s on a 2-core host);
what they check (files, resumption, messages, what the trainer prints) does not depend on the code XLA generates.
The tests that compare numbers run in the pytest process, compiled as users get them.
"""

import os

FAST_COMPILE = '--xla_backend_optimization_level=0'


def subprocess_env(**extra):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=FAST_COMPILE, **extra)
    env.pop('SG3JAX_DISTRIBUTED', None)
    return env

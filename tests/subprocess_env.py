"""The environment of the programs the tests start (training runs, the command-line tools; not collected).

A plain CPU user run: one device (none of the test session's 8 simulated ones), no jax.distributed, and by
default XLA's CPU backend at optimisation level 0. Those runs are tiny and short, so compiling is most of their
time: level 0 compiles the tiny StyleGAN2 training run in 43 s instead of 66 (its 8 steps, with the session's
compilation cache warm, take 18 s at either level; 2-core host). `fast_compile=False` keeps the default level
for the single-process StyleGAN3 runs of test_loop, whose programs level 0 slows more than it speeds up their
compiling: the run of tests/train_worker.py (4 synthesis layers) cold 42 s at level 0 / 59 s at the default, warm
27 / 21 s (31 / 22 CPU-s), and most of those runs find the cache warm (measured with the official 14 layers in a
full run: SIGKILL during a save 101 -> 72 s, SIGTERM 95 -> 68).
The two-process jobs of test_multihost stay at level 0: their times in clean-clone runs (setup 114-205 s) moved
with the host's load at either level, so there is no measured case for changing them. What those runs check
(files, resumption, messages, what the trainer prints) does not depend on the code XLA generates; the tests that
compare numbers with a reference run in the pytest process, compiled as users get them.
"""

import os

FAST_COMPILE = '--xla_backend_optimization_level=0'


def subprocess_env(fast_compile=True, **extra):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=FAST_COMPILE if fast_compile else '', **extra)
    env.pop('SG3JAX_DISTRIBUTED', None)
    return env

"""Test setup: deterministic CPU JAX with a known device count, set before anything imports jax."""

import os
import sys

# Simulated devices for sharding tests; must be set before jax initialises its backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)

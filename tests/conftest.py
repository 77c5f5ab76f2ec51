"""Test setup: deterministic CPU JAX with a known device count, set before anything imports jax."""

import atexit
import os
import shutil
import sys
import tempfile

# Simulated devices for sharding tests; must be set before jax initialises its backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
sys.path.insert(0, os.path.dirname(__file__))

# One persistent XLA compilation cache for the session, in the environment so that the training runs the tests
# start as subprocesses share it: compiling, not running, is most of a tiny-config test's time (the tiny
# StyleGAN3-T G step is ~15 s to compile on a 2-core CPU), and a resumed run, a second process or another test of
# the same spec compiles the same programs again. A fresh directory per session, removed at exit, so nothing
# carries over between runs; JAX_COMPILATION_CACHE_DIR set by the caller is used (and kept) instead.
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    _cache = tempfile.mkdtemp(prefix='sg3jax-tests-xla-cache-')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)

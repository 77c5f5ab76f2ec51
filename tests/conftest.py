"""Test setup: deterministic CPU JAX with a known device count, set before anything imports jax; strict runs.

SG3JAX_STRICT=1 (CI sets it) makes a run fail instead of skip: without the official-code reference data
(`golden.golden_dir`) every parity test fails, and any test that skips for any reason (a missing package, data,
a tool) fails with its reason.
"""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

# Simulated devices for sharding tests; must be set before jax initialises its backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
sys.path.insert(0, os.path.dirname(__file__))

# One persistent XLA compilation cache for the session, in the environment so that the pytest-xdist workers and
# the training runs the tests start as subprocesses share it: compiling, not running, is most of a tiny-config
# test's time, and a resumed run, a second process or another test of the same spec compiles the same programs
# again. The directory is made here, in the first process (pytest's, before its workers start; they inherit the
# variable), and removed when that process exits. JAX_COMPILATION_CACHE_DIR set by the caller is used (and kept)
# instead (CI runs one pytest session, so it needs none).
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    _cache = tempfile.mkdtemp(prefix='sg3jax-tests-xla-cache-')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)

STRICT = os.environ.get('SG3JAX_STRICT') == '1'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In a strict run a skip is a failure (a missing package or data file must not pass silently)."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, 'wasxfail'):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = 'failed'
        report.longrepr = f'skipped in a strict run (SG3JAX_STRICT=1), which must run every test: {reason}'


pytest_plugins = ['pytester']        # tests/test_strict.py runs pytest on small test files of its own

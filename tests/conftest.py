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
# pytest's report of an exception raised in garbage collection (orbax's closed asyncio loop) imports tracemalloc
# inside its hook; run inside tensorflow_datasets' lazy-import block (etils patches `__import__` there), that
# first import failed and errored the test being set up (seen once). Imported here, it is only looked up then.
import tracemalloc

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

del tracemalloc                     # imported for its side effect only

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


# The longest test files first (measured on a 2-core host, 2026-12-04): pytest-xdist hands out whole files in
# collection order (pyproject: `--dist loadfile --no-loadscope-reorder`), so the workers finish together instead
# of one running a long file alone at the end (xdist's own order, by number of tests, left one worker alone for
# the last 6 of 17 minutes of the default suite). The files whose tests are all or mostly `slow` lead: they start
# first in CI, and in the default run they hold nothing (multihost, notebook) or a few short tests (remat), so
# its order is the rest of the list. Files not named keep their order, after these.
LONGEST_FIRST = ['test_multihost.py', 'test_remat.py', 'test_notebook.py',
                 'test_loop.py', 'test_networks.py', 'test_loss.py', 'test_train_cli.py', 'test_ops.py',
                 'test_mixed_precision.py', 'test_augment.py', 'test_tools.py', 'test_steps.py', 'test_plan.py',
                 'test_network_api.py', 'test_metrics_nets.py', 'test_metrics_eq.py']


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # a stable sort


pytest_plugins = ['pytester']        # tests/test_strict.py runs pytest on small test files of its own

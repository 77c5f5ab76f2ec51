"""Access to the official-code reference data in `../shared/golden` (see its README for every array)."""

import functools
import json
import os
import pathlib

import numpy as np
import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]


STRICT = os.environ.get('SG3JAX_STRICT') == '1'


def _location():
    env = os.environ.get('SG3JAX_GOLDEN')
    return pathlib.Path(env) if env else _REPO.parent / 'shared' / 'golden'


def golden_dir():
    """$SG3JAX_GOLDEN if set, else ../shared/golden beside the repository; None if it is not a directory. In a
    strict run (SG3JAX_STRICT=1) a missing directory raises: the parity cases are discovered from it when the
    test files are collected, so without it they would not exist, and nothing would fail."""
    d = _location()
    if d.is_dir():
        return d
    if STRICT:
        raise FileNotFoundError(f'{SKIP_REASON} (looked in {d}; SG3JAX_STRICT=1 requires it)')
    return None


SKIP_REASON = ('golden reference data not found: set $SG3JAX_GOLDEN or place the official-code reference '
               'outputs in ../shared/golden')


def require_golden():
    """The golden directory; skips the test without it (fails in a strict run, see golden_dir)."""
    d = golden_dir()
    if d is None:
        pytest.skip(SKIP_REASON)
    return d


def case_files(prefix):
    """Names of `<prefix>_<name>.npz` network cases (e.g. prefix 'G' -> ['sg2_64', ...]); [] without data."""
    d = golden_dir()
    if d is None:
        return []
    return sorted(p.name[len(prefix) + 1:-4] for p in d.glob(f'{prefix}_*.npz'))


@functools.lru_cache(maxsize=None)
def load(name):
    """Loads `<name>.npz` fully into a dict (cached: tests share one read). A missing file is an error, not a
    skip: every file the tests read is in the golden README."""
    d = require_golden()
    path = d / f'{name}.npz'
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing from the golden reference data (see its README)')
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def json_field(data, key):
    return json.loads(str(data[key]))


def params_of(data):
    """The official state_dict: {'mapping.fc0.weight': array, ...}."""
    return {k[len('param/'):]: v for k, v in data.items() if k.startswith('param/')}


def assert_close(ours, ref, rtol=1e-5, atol_rel=1e-5, atol=1e-6, name=''):
    """max|ours - ref| <= atol + atol_rel * max|ref| + rtol * |ref| elementwise (golden README suggestion)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f'{name}: shape {ours.shape} != reference {ref.shape}'
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = np.abs(ours - ref)
    bound = atol + atol_rel * scale + rtol * np.abs(ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), (f'{name}: max|diff| = {err.max():.3e} (max|ref| = {scale:.3e}); worst at {worst}: '
                                  f'ours {ours[worst]:.7g} vs ref {ref[worst]:.7g}')


def nchw_to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))

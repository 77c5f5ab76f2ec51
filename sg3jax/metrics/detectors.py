"""Feature networks (Inception-v3, VGG-16) for the metrics: our converted .npz files, loaded and cached.

The official metrics download NVIDIA's TorchScript pickles (URLs below) and unpickle them, which executes code.
We never unpickle at metric time: `python -m sg3jax.convert_feature_nets --src FILE.pkl --dest DIR` converts
them once (needs PyTorch) into plain .npz files {official state_dict name: array}, found here through
`--detector-dir`, the environment variable SG3JAX_DETECTORS, or an http(s) URL of such an .npz (downloaded once
into a cache directory, atomically).
"""

import dataclasses
import functools
import hashlib
import os
import tempfile
import urllib.request
import zipfile
from typing import Any, Callable, Dict

import numpy as np
import jax.numpy as jnp

from sg3jax import utils
from sg3jax.metrics import inception, vgg16

OFFICIAL_URLS = {
    'inception': 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/'
                 'inception-2015-12-05.pkl',
    'vgg16': 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl',
}
NPZ_NAMES = {'inception': 'inception-2015-12-05.npz', 'vgg16': 'vgg16.npz'}
MODULES = {'inception': inception, 'vgg16': vgg16}
ENV_DIR = 'SG3JAX_DETECTORS'


@dataclasses.dataclass(frozen=True)
class Detector:
    """A feature network: `apply(params, images [N,H,W,3] in [0,255], **kwargs)`; `fingerprint` identifies its
    weights in dataset-statistics cache keys."""
    kind: str
    params: Dict[str, Any]
    fingerprint: str
    apply: Callable = dataclasses.field(repr=False, default=None)

    def __call__(self, images, **kwargs):
        return self.apply(self.params, images, **kwargs)


def params_fingerprint(params):
    h = hashlib.md5()
    for k in sorted(params):
        h.update(k.encode())
        h.update(np.ascontiguousarray(np.asarray(params[k])).tobytes())
    return h.hexdigest()


def from_params(kind, params, fingerprint=None):
    """A Detector from in-memory params (e.g. `inception.init()` in tests)."""
    check_params(kind, params, where=f'{kind} params')
    return Detector(kind, params, fingerprint or params_fingerprint(params), MODULES[kind].apply)


def check_params(kind, params, where):
    """Strict: every expected name present with its shape, nothing else."""
    expected = MODULES[kind].param_shapes()
    missing = [k for k in expected if k not in params]
    unexpected = [k for k in params if k not in expected]
    wrong = [f'{k}: {tuple(np.shape(params[k]))}, expected {expected[k]}' for k in expected
             if k in params and tuple(np.shape(params[k])) != tuple(expected[k])]
    if missing or unexpected or wrong:
        lines = [f'{where} does not match the {kind} architecture:']
        for title, items in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong)):
            if items:
                lines.append(f'  {title} ({len(items)}): ' + ', '.join(items[:10]) + (' ...' if len(items) > 10
                                                                                      else ''))
        raise ValueError('\n'.join(lines))


def save_npz(path, kind, params, torchscript_code=None):
    """Write {name: float32 array} (+ `_kind`, optional `_torchscript_code`) atomically."""
    check_params(kind, params, where=f'{kind} params')
    arrays = {k: np.asarray(v, np.float32) for k, v in params.items()}
    arrays['_kind'] = np.array(kind)
    if torchscript_code is not None:
        arrays['_torchscript_code'] = np.array(torchscript_code)
    utils.savez_atomic(path, arrays)


def _file_md5(path):
    h = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def _load_npz_cached(path, mtime, size, kind):
    del mtime, size  # cache keys only: a rewritten file is read again
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_kind = str(z['_kind']) if '_kind' in z.files else kind
            params = {k: z[k] for k in z.files if not k.startswith('_')}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f'{path}: not a readable converted {kind} network ({type(e).__name__}: {e}); write it again '
                         f'with python -m sg3jax.convert_feature_nets') from None
    if stored_kind != kind:
        raise ValueError(f'{path}: holds a {stored_kind} network, expected {kind}')
    check_params(kind, params, where=path)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return Detector(kind, params, _file_md5(path), MODULES[kind].apply)


def load_npz(path, kind):
    st = os.stat(path)
    return _load_npz_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size, kind)


def _missing_message(kind, searched):
    name = NPZ_NAMES[kind]
    return (f'feature network {name} not found (searched: {", ".join(searched) or "nothing"}).\n'
            f'Convert NVIDIA\'s official file once (needs PyTorch):\n'
            f'  download {OFFICIAL_URLS[kind]}\n'
            f'  python -m sg3jax.convert_feature_nets --src {os.path.basename(OFFICIAL_URLS[kind])} --dest DIR\n'
            f'then pass --detector-dir DIR (calc_metric(detector_dir=DIR)) or set {ENV_DIR}=DIR.')


def download(url, cache_dir):
    """Fetch `url` into cache_dir once (temp file + os.replace); returns the local path."""
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    local = os.path.join(cache_dir, hashlib.md5(url.encode()).hexdigest() + '-' + os.path.basename(url))
    if not os.path.isfile(local):
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix='.download-', suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(url) as r:
                for chunk in iter(lambda: r.read(1 << 22), b''):
                    f.write(chunk)
            os.replace(tmp, local)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return local


def get_detector(kind, detector_dir=None, cache_dir=None):
    """The `kind` ('inception' | 'vgg16') network from `detector_dir` (a directory, or an http(s) URL prefix of
    converted .npz files), else $SG3JAX_DETECTORS; a clear error says how to make the files otherwise."""
    if kind not in MODULES:
        raise ValueError(f'unknown feature network {kind!r}; expected one of {sorted(MODULES)}')
    searched = []
    for d in (detector_dir, os.environ.get(ENV_DIR)):
        if not d:
            continue
        d = os.fspath(d)
        if d.startswith(('http://', 'https://')):
            url = d.rstrip('/') + '/' + NPZ_NAMES[kind]
            cache = cache_dir or os.path.join(os.path.expanduser('~'), '.cache', 'sg3jax', 'detectors')
            return load_npz(download(url, cache), kind)
        path = os.path.join(os.path.expanduser(d), NPZ_NAMES[kind])
        searched.append(path)
        if os.path.isfile(path):
            return load_npz(path, kind)
    raise FileNotFoundError(_missing_message(kind, searched))

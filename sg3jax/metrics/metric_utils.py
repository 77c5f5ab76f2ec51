"""Shared machinery of the metrics (official `metrics/metric_utils.py`): options, the feature statistics, the
dataset and generator feature loops (sharded over a 'data' mesh, with a dataset-statistics cache).

A metric never holds more than one batch of images: features are accumulated on the host as they come
(float64 mean/covariance sums, or the raw features where the metric needs them all, as officially).

Several processes (`jax.distributed`): the mesh spans every device of the job. Each process reads only its
rows of a dataset batch; the generated latents are drawn inside the compiled step, so each device makes its own
rows. Every compiled step returns its features replicated (gathered over the mesh), so every process appends the
whole global batch, in order, to identical statistics: the result is the one a single process with the same
devices computes, and every process returns it (the caller lets process 0 report it).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional

import numpy as np
import jax
import jax.numpy as jnp
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from sg3jax import utils
from sg3jax.data import open_dataset
from sg3jax.metrics import detectors as _detectors
from sg3jax.networks import generator

#----------------------------------------------------------------------------

@dataclasses.dataclass
class MetricOptions:
    """Everything a metric needs (official MetricOptions; num_gpus -> num_devices).

    G: (params, buffers, G_cfg). dataset: a dataset path (sg3jax.data.open_dataset) or an opened Dataset.
    mirror: dataset x-flips (the legacy metrics follow it; the *_full ones force it off, as officially).
    num_devices: devices to shard over, the first N of jax.devices(); on several processes, all of them.
    num_gen / max_real: override the metric's sample counts (quick checks, tests); None = the official count.
    detectors: {'inception' | 'vgg16': Detector} to use instead of loading from detector_dir.
    """
    G: Any = None
    G_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: Any = None
    mirror: bool = False
    max_size: Optional[int] = None
    num_devices: Optional[int] = None
    batch_size: int = 64
    cache: bool = True
    cache_dir: Optional[str] = None
    detector_dir: Optional[str] = None
    detectors: Dict[str, Any] = dataclasses.field(default_factory=dict)
    num_gen: Optional[int] = None
    max_real: Optional[int] = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        n = jax.device_count() if self.num_devices is None else int(self.num_devices)
        if not 1 <= n <= jax.device_count():
            raise ValueError(f'num_devices ({n}) must be between 1 and the {jax.device_count()} devices present')
        if jax.process_count() > 1 and n != jax.device_count():
            # A mesh without some process's devices would leave that process out of the collectives.
            raise ValueError(f'num_devices ({n}): on {jax.process_count()} processes the metrics run on all '
                             f'{jax.device_count()} devices of the job')
        self.num_devices = n
        # Auto axis: the metric steps place their batch with with_sharding_constraint and let XLA propagate it.
        self.mesh = jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                                  devices=jax.devices()[:n])
        self._dataset = None

    # --- helpers -----------------------------------------------------------
    def detector(self, kind):
        if kind not in self.detectors:
            self.detectors[kind] = _detectors.get_detector(kind, self.detector_dir, cache_dir=self.cache_dir)
        return self.detectors[kind]

    def open_dataset(self):
        if self._dataset is None:
            if self.dataset is None:
                raise ValueError('this metric needs a dataset: pass dataset=PATH (calc_metrics --data)')
            if isinstance(self.dataset, (str, os.PathLike)):
                self._dataset = open_dataset(self.dataset)
            else:
                self._dataset = self.dataset
        return self._dataset

    def round_batch(self, batch):
        """Batch rounded up to a multiple of the device count (the batch is sharded over 'data')."""
        n = self.num_devices
        return max(n, -(-int(batch) // n) * n)

    def shard(self, x):
        """A host batch, the same on every process, split over 'data'."""
        return jax.device_put(x, NamedSharding(self.mesh, P('data')))

    def shard_rows(self, shape, read_rows):
        """A batch of `shape` split over 'data', of which this process reads only the rows of its own devices:
        read_rows(global row indices) -> those rows."""
        return jax.make_array_from_callback(shape, NamedSharding(self.mesh, P('data')),
                                            lambda index: read_rows(np.arange(shape[0])[index[0]]))

    def replicate(self, tree):
        """Parameters on every device of the mesh. On several processes, a process-local array (a network this
        process read from a file, the same in every process) goes through the host: JAX does not copy it from
        one process's device to another's."""
        sharding = NamedSharding(self.mesh, P())

        def put(x):
            if jax.process_count() > 1 and getattr(x, 'is_fully_addressable', True):
                x = np.asarray(x)
            return jax.device_put(x, sharding)
        return jax.tree.map(put, tree)

    def spec(self):
        return generator.spec(self.G[2])

    def tqdm(self, total, desc):
        return tqdm.tqdm(total=total, desc=desc, unit='img', disable=not self.progress or jax.process_index() > 0,
                         leave=False)

#----------------------------------------------------------------------------

class FeatureStats:
    """Running feature statistics (official FeatureStats): all features and/or float64 sums for mean/cov."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = []
        self.raw_mean = None
        self.raw_cov = None

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        x = np.asarray(x, np.float32)
        if x.ndim != 2:
            raise ValueError(f'FeatureStats.append expects [N, F] features, got shape {x.shape}')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        if self.num_features is None:
            self.num_features = x.shape[1]
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([x.shape[1]], np.float64)
                self.raw_cov = np.zeros([x.shape[1], x.shape[1]], np.float64)
        elif x.shape[1] != self.num_features:
            raise ValueError(f'FeatureStats: got {x.shape[1]} features, expected {self.num_features}')
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def get_all(self):
        if not self.capture_all:
            raise ValueError('FeatureStats: features were not captured (capture_all=False)')
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_mean_cov(self):
        if not self.capture_mean_cov or self.num_items == 0:
            raise ValueError('FeatureStats: no mean/covariance captured')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path):
        """Atomic .npz (no pickle)."""
        d = dict(capture_all=self.capture_all, capture_mean_cov=self.capture_mean_cov,
                 max_items=-1 if self.max_items is None else self.max_items, num_items=self.num_items,
                 num_features=-1 if self.num_features is None else self.num_features)
        arrays = {k: np.array(v) for k, v in d.items()}
        if self.capture_all:
            arrays['all_features'] = self.get_all()
        if self.capture_mean_cov and self.raw_mean is not None:
            arrays['raw_mean'], arrays['raw_cov'] = self.raw_mean, self.raw_cov
        utils.savez_atomic(path, arrays)

    @staticmethod
    def load(path):
        with np.load(path, allow_pickle=False) as z:
            max_items = int(z['max_items'])
            s = FeatureStats(bool(z['capture_all']), bool(z['capture_mean_cov']), None if max_items < 0 else max_items)
            s.num_items = int(z['num_items'])
            s.num_features = None if int(z['num_features']) < 0 else int(z['num_features'])
            if s.capture_all:
                s.all_features = [z['all_features']]
            if 'raw_mean' in z.files:
                s.raw_mean, s.raw_cov = z['raw_mean'], z['raw_cov']
        return s

#----------------------------------------------------------------------------
# Compiled steps are kept per process, keyed by everything they close over (never by parameter values, which
# are arguments): a trainer evaluating every snapshot compiles each metric's step once.

_STEPS = {}


def cached_step(opts, name, build, *key):
    """jax.jit(build()) memoised on (name, mesh devices, G config, key...); its outputs are replicated over the
    mesh, so that every process can read them whole."""
    # normalize_config: a ConfigDict G config becomes a plain dict. In `key`, values that are not plain data (a
    # detector's apply function, a dtype among the G_kwargs) count by their own == (a function: by identity).
    g_cfg = utils.freeze(generator.normalize_config(opts.G[2])) if opts.G is not None else None
    k = (name, tuple(d.id for d in opts.mesh.devices.flat), g_cfg, utils.freeze(key, keep_other=True))
    if k not in _STEPS:
        _STEPS[k] = jax.jit(build(), out_shardings=NamedSharding(opts.mesh, P()))
    return _STEPS[k]


def _detector_fn(opts, kind, detector_kwargs):
    det = opts.detector(kind)
    params = opts.replicate(det.params)
    fn = cached_step(opts, 'detector', lambda: (lambda p, img: det.apply(p, img, **detector_kwargs)),
                     kind, det.apply, detector_kwargs)
    return det, params, fn


def _to_rgb(img):
    return jnp.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _on_every_process(flag):
    """True when `flag` is true on every process of the job (on a single process: `flag`)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def compute_feature_stats_for_dataset(opts, kind, detector_kwargs, max_items=None, batch_size=None, **stats_kwargs):
    """Features of the first `max_items` dataset images (x-flipped copies appended when opts.mirror, as the
    official dataset's xflip), cached under a hash of (dataset, options, detector weights, kwargs).

    Several processes: the cache is used only when every process finds the file (so all of them either read it
    or take part in computing it); process 0 writes it, and a process that still does not see it afterwards (its
    cache directory is not shared with process 0's) writes its own copy."""
    ds = opts.open_dataset()
    if opts.G is not None and ds.resolution != opts.spec().img_resolution:
        raise ValueError(f'dataset {opts.dataset}: {ds.resolution}x{ds.resolution} images, but the generator makes '
                         f'{opts.spec().img_resolution}x{opts.spec().img_resolution}; the metrics compare at one '
                         f'resolution (official calc_metrics sets the dataset resolution to the generator\'s)')
    n_raw = len(ds)
    num_all = n_raw * (2 if opts.mirror else 1)
    if opts.max_size is not None:
        num_all = min(num_all, opts.max_size)
    num_items = num_all if max_items is None else min(num_all, max_items)
    det = opts.detector(kind)

    cache_file = None
    if opts.cache:
        key = dict(dataset=os.path.abspath(os.fspath(opts.dataset)) if isinstance(opts.dataset, (str, os.PathLike))
                   else repr(ds), num_images=n_raw, mirror=bool(opts.mirror), max_size=opts.max_size,
                   num_items=num_items, detector=kind, detector_fingerprint=det.fingerprint,
                   detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
        md5 = hashlib.md5(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        name = os.path.basename(os.path.normpath(os.fspath(opts.dataset))) if isinstance(
            opts.dataset, (str, os.PathLike)) else 'dataset'
        cache_dir = opts.cache_dir or os.path.join(os.path.expanduser('~'), '.cache', 'sg3jax')
        cache_file = os.path.join(cache_dir, 'gan-metrics', f'{name}-{kind}-{md5}.npz')
        if _on_every_process(os.path.isfile(cache_file)):
            return FeatureStats.load(cache_file)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    _, params, fn = _detector_fn(opts, kind, detector_kwargs)
    batch = opts.round_batch(batch_size or opts.batch_size)
    pool = concurrent.futures.ThreadPoolExecutor(8)

    def read_rows(idx):                   # global item indices (past the end: repeats of the last, masked out)
        def read(i):
            img, _ = ds[int(i) % n_raw]
            return img[:, ::-1] if i >= n_raw else img              # official xflip: the second copy is flipped
        imgs = np.stack(list(pool.map(read, np.minimum(idx, num_items - 1))))
        return np.repeat(imgs, 3, axis=-1) if imgs.shape[-1] == 1 else imgs

    shape = (batch, ds.resolution, ds.resolution, 3)
    bar = opts.tqdm(num_items, f'dataset features ({kind})')
    for start in range(0, num_items, batch):
        valid = np.arange(start, start + batch) < num_items
        feats = np.asarray(fn(params, opts.shard_rows(shape, lambda rows: read_rows(start + rows))))
        stats.append(feats[valid])
        bar.update(int(valid.sum()))
    pool.shutdown()
    bar.close()
    if cache_file is not None:
        if jax.process_index() == 0:
            stats.save(cache_file)
        if jax.process_count() > 1:
            # After process 0's write; the barrier's name must be the same string on every process.
            multihost_utils.sync_global_devices(f'metric cache {os.path.basename(cache_file)}')
            if jax.process_index() > 0 and not os.path.isfile(cache_file):
                stats.save(cache_file)
    return stats


def random_labels(opts, batch, rng):
    """Labels for generated images (official iterate_random_labels): zeros without labels, else labels of
    uniformly drawn dataset images."""
    c_dim = opts.spec().c_dim
    if c_dim == 0:
        return np.zeros([batch, 0], np.float32)
    ds = opts.open_dataset()
    return np.stack([ds[int(i)][1] for i in rng.integers(len(ds), size=batch)]).astype(np.float32)


def to_uint8(img):
    """[-1, 1] float -> uint8 as the official (img * 127.5 + 128).clamp(0, 255).to(uint8) (truncation)."""
    return jnp.clip(img * 127.5 + 128, 0, 255).astype(jnp.uint8)


def compute_feature_stats_for_generator(opts, kind, detector_kwargs, batch_size=None, **stats_kwargs):
    """Features of generated images, z ~ N(0, I) and random dataset labels, until stats_kwargs['max_items']."""
    g_params, g_buffers, g_cfg = opts.G
    spec = generator.spec(g_cfg)
    det = opts.detector(kind)
    g_kwargs = dict(opts.G_kwargs)
    psi = g_kwargs.pop('truncation_psi', 1.0)
    cutoff = g_kwargs.pop('truncation_cutoff', None)
    # The official G(z, c) draws fresh StyleGAN2 noise per image (noise_mode='random' by default); our
    # synthesis defaults to 'const', so ask for random noise unless the caller chose a mode.
    random_noise = spec.arch == 'stylegan2' and g_kwargs.get('noise_mode', 'random') == 'random'
    if random_noise:
        g_kwargs['noise_mode'] = 'random'

    mesh = opts.mesh

    def step(gp, gb, dp, key, c):
        z = jax.random.normal(key, (c.shape[0], spec.z_dim))
        z = jax.lax.with_sharding_constraint(z, NamedSharding(mesh, P('data')))
        noise = dict(noise_key=jax.random.fold_in(key, 1)) if random_noise else {}
        img = generator.apply(gp, gb, z, c, g_cfg, truncation_psi=psi, truncation_cutoff=cutoff, **g_kwargs,
                              **noise)
        return det.apply(dp, _to_rgb(to_uint8(img)), **detector_kwargs)

    run = cached_step(opts, 'generator_features', lambda: step, kind, det.apply, detector_kwargs,
                       opts.G_kwargs)

    stats = FeatureStats(**stats_kwargs)
    if stats.max_items is None:
        raise ValueError('compute_feature_stats_for_generator needs max_items')
    gp, gb, dp = opts.replicate(g_params), opts.replicate(g_buffers), opts.replicate(det.params)
    batch = opts.round_batch(batch_size or opts.batch_size)
    rng = np.random.default_rng(opts.seed)
    base = jax.random.key(opts.seed)
    bar = opts.tqdm(stats.max_items, f'generator features ({kind})')
    i = 0
    while not stats.is_full():
        c = opts.shard(random_labels(opts, batch, rng))
        before = stats.num_items
        stats.append(np.asarray(run(gp, gb, dp, jax.random.fold_in(base, i), c)))
        bar.update(stats.num_items - before)
        i += 1
    bar.close()
    return stats

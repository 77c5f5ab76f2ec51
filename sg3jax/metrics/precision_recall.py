"""Improved Precision and Recall (Kynkaanniemi et al. 2019), as the official `metrics/precision_recall.py`.

VGG-16 fc2 features, stored as float16 as officially. Each manifold point's radius is the distance to its
`nhood_size`-th nearest neighbour in its own set (the (k+1)-th smallest distance, counting itself); a probe is
covered if it lies within some manifold point's radius. precision = covered fraction of generated features
against the real manifold, recall = the reverse. Distances are computed in [row_batch, col_batch] tiles on the
device, keeping only running k-smallest lists and coverage flags: the full distance matrix never exists.
"""

import functools

import numpy as np
import jax
import jax.numpy as jnp

from sg3jax.metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)


def _dist(a, b):
    """Euclidean distances [R, C] (float32), as torch.cdist's matmul form."""
    d2 = (jnp.sum(jnp.square(a), 1)[:, None] + jnp.sum(jnp.square(b), 1)[None, :]
          - 2 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.sqrt(jnp.maximum(d2, 0))


@functools.partial(jax.jit, static_argnames='k')
def _kth_update(best, rows, cols, col_valid, k):
    d = jnp.where(col_valid[None, :], _dist(rows, cols), jnp.inf)
    merged = jnp.concatenate([best, d], axis=1)
    return -jax.lax.top_k(-merged, k)[0]                             # k smallest, ascending


@jax.jit
def _cover_update(covered, rows, cols, radii, col_valid):
    d = _dist(rows, cols).astype(jnp.float16)
    hit = (d <= radii[None, :]) & col_valid[None, :]
    return covered | jnp.any(hit, axis=1)


def _batches(x, size):
    n = x.shape[0]
    for s in range(0, n, size):
        chunk = x[s:s + size]
        valid = np.ones(size, bool)
        if chunk.shape[0] < size:
            valid[chunk.shape[0]:] = False
            chunk = np.concatenate([chunk, np.zeros((size - chunk.shape[0], x.shape[1]), x.dtype)])
        yield s, chunk, valid


def precision_recall(real_features, gen_features, nhood_size, row_batch_size, col_batch_size):
    """(precision, recall) from feature arrays; features are rounded to float16 first, as officially."""
    real = np.asarray(real_features, np.float16).astype(np.float32)
    gen = np.asarray(gen_features, np.float16).astype(np.float32)
    k = nhood_size + 1
    out = []
    for manifold, probes in ((real, gen), (gen, real)):
        rb = min(row_batch_size, max(manifold.shape[0], probes.shape[0]))
        cb = min(col_batch_size, manifold.shape[0])
        radii = np.zeros(manifold.shape[0], np.float32)
        for s, rows, rvalid in _batches(manifold, rb):
            best = jnp.full((rb, k), jnp.inf, jnp.float32)
            for _, cols, cvalid in _batches(manifold, cb):
                best = _kth_update(best, rows, cols, cvalid, k)
            radii[s:s + rb] = np.asarray(best[:, k - 1])[:int(rvalid.sum())]
        radii16 = jnp.asarray(radii.astype(np.float16))             # official: kth value kept in float16
        covered = np.zeros(probes.shape[0], bool)
        for s, rows, rvalid in _batches(probes, rb):
            cov = jnp.zeros(rb, bool)
            for cs, cols, cvalid in _batches(manifold, cb):
                r = jnp.zeros(cb, jnp.float16).at[:min(cb, manifold.shape[0] - cs)].set(radii16[cs:cs + cb])
                cov = _cover_update(cov, rows, cols, r, cvalid)
            covered[s:s + rb] = np.asarray(cov)[:int(rvalid.sum())]
        out.append(float(covered.mean()))
    return out[0], out[1]


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'vgg16', DETECTOR_KWARGS, max_items=max_real, capture_all=True).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'vgg16', DETECTOR_KWARGS, capture_all=True, max_items=num_gen).get_all()
    return precision_recall(real, gen, nhood_size, row_batch_size, col_batch_size)

"""Perceptual Path Length (Karras et al. 2019), as the official `metrics/perceptual_path_length.py`.

Per sample: two latents, t = 0 ('end') or U(0, 1) ('full'), interpolation in W (lerp) or Z (slerp) at t and
t + epsilon, images from synthesis (StyleGAN2's noise_const buffers re-randomised per batch, noise_mode
'const'), optional face crop, box-downsampled to 256 when larger, scaled to [0, 255], and the squared LPIPS
distance of the two images / epsilon^2 (VGG-16 LPIPS vectors, no resize). PPL is the mean after dropping
values outside the [1st ('lower'), 99th ('higher')] percentiles.
"""

import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from sg3jax.metrics import metric_utils
from sg3jax.networks import generator


def slerp(a, b, t):
    """Spherical interpolation of the normalised vectors a, b [N, D] at t [N, 1]."""
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    d = jnp.sum(a * b, axis=-1, keepdims=True)
    p = t * jnp.arccos(d)
    c = b - d * a
    c = c / jnp.linalg.norm(c, axis=-1, keepdims=True)
    d = a * jnp.cos(p) + c * jnp.sin(p)
    return d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def _randomize_noise(buffers, key):
    """Fresh N(0, 1) for every `noise_const` buffer (StyleGAN2), as the official sampler does per batch."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(buffers)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for (path, leaf), k in zip(leaves, keys):
        name = getattr(path[-1], 'key', None)
        out.append(jax.random.normal(k, leaf.shape, leaf.dtype) if name == 'noise_const' else leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def filtered_mean(dist):
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(np.extract(np.logical_and(dist >= lo, dist <= hi), dist).mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    if space not in ('z', 'w') or sampling not in ('full', 'end'):
        raise ValueError(f"PPL: space must be 'z' or 'w' and sampling 'full' or 'end', got {space!r}, {sampling!r}")
    g_params, g_buffers, g_cfg = opts.G
    spec = generator.spec(g_cfg)
    vgg = opts.detector('vgg16')
    g_kwargs = {k: v for k, v in opts.G_kwargs.items() if k not in ('truncation_psi', 'truncation_cutoff')}

    mesh = opts.mesh

    def sample(gp, gb, vp, key, c):
        n = c.shape[0]
        k_t, k_z, k_noise = jax.random.split(key, 3)
        shard = lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P('data')))
        t = jax.random.uniform(k_t, (n,)) * (1.0 if sampling == 'full' else 0.0)
        z = jax.random.normal(k_z, (2, n, spec.z_dim))
        z0, z1 = shard(z[0]), shard(z[1])
        if space == 'w':
            w = generator.mapping(gp, gb, jnp.concatenate([z0, z1]), jnp.concatenate([c, c]), g_cfg)
            w0, w1 = w[:n], w[n:]
            tt = t[:, None, None]
            wt0 = w0 + (w1 - w0) * tt
            wt1 = w0 + (w1 - w0) * (tt + epsilon)
        else:
            zt0 = slerp(z0, z1, t[:, None])
            zt1 = slerp(z0, z1, t[:, None] + epsilon)
            w = generator.mapping(gp, gb, jnp.concatenate([zt0, zt1]), jnp.concatenate([c, c]), g_cfg)
            wt0, wt1 = w[:n], w[n:]
        gb = _randomize_noise(gb, k_noise)
        img = generator.synthesis(gp, gb, jnp.concatenate([wt0, wt1]), g_cfg, noise_mode='const', **g_kwargs)
        if crop:                                                     # official face crop (rows 3/8..7/8, cols 2/8..6/8)
            q = img.shape[1] // 8
            img = img[:, q * 3:q * 7, q * 2:q * 6, :]
        factor = spec.img_resolution // 256
        if factor > 1:                                               # box downsample to 256
            nb, h, w_, ch = img.shape
            img = img.reshape(nb, h // factor, factor, w_ // factor, factor, ch).mean(axis=(2, 4))
        img = (img + 1) * (255 / 2)
        if img.shape[-1] == 1:
            img = jnp.repeat(img, 3, axis=-1)
        lp = vgg.apply(vp, img, resize_images=False, return_lpips=True)
        return jnp.sum(jnp.square(lp[:n] - lp[n:]), axis=1) / epsilon ** 2

    run = metric_utils.cached_step(opts, 'ppl', lambda: sample, vgg.apply, opts.G_kwargs, epsilon, space,
                                      sampling, crop)
    gp, gb, vp = opts.replicate(g_params), opts.replicate(g_buffers), opts.replicate(vgg.params)
    batch = opts.round_batch(batch_size)
    rng = np.random.default_rng(opts.seed)
    base = jax.random.key(opts.seed)
    dist = []
    bar = opts.tqdm(num_samples, 'ppl sampling')
    for i, start in enumerate(range(0, num_samples, batch)):
        c = opts.shard(metric_utils.random_labels(opts, batch, rng))
        dist.append(np.asarray(run(gp, gb, vp, jax.random.fold_in(base, i), c), np.float64))
        bar.update(min(batch, num_samples - start))
    bar.close()
    return filtered_mean(np.concatenate(dist)[:num_samples])

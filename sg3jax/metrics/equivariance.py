"""Equivariance metrics EQ-T, EQ-T_frac and EQ-R (Karras et al. 2021, Appendix E), as the official
`metrics/equivariance.py`.

For each sample: a reference image with the identity input transform, and an image whose StyleGAN3 input
transform translates by t (or rotates by alpha). The reference is transformed by the image-space operator
(integer shift; Lanczos-3 fractional shift; band-limited rotation, compared with the "pseudo-rotated" image),
and PSNR = 20 log10(2) - 10 log10(MSE) over the valid (masked) pixels of all samples, with squared errors and
mask sums accumulated in float64.

The image operators are written per image with a traced shift or angle, so each sample draws its own transform
(officially one transform per 4-image GPU batch): the same estimator, with more independent draws.
"""

import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from sg3jax.metrics import metric_utils
from sg3jax.metrics.resample import affine_grid, grid_sample
from sg3jax.networks import generator
from sg3jax.ops.upfirdn2d import filter2d, upsample2d

#----------------------------------------------------------------------------
# Filters.

def sinc(x):
    y = jnp.abs(x * np.pi)
    z = jnp.sin(y) / jnp.maximum(y, 1e-30)
    return jnp.where(y < 1e-30, jnp.ones_like(x), z)


def lanczos_window(x, a):
    x = jnp.abs(x) / a
    return jnp.where(x < 1, sinc(x), jnp.zeros_like(x))


def rotation_matrix(angle):
    c, s = jnp.cos(angle), jnp.sin(angle)
    z, o = jnp.zeros_like(angle), jnp.ones_like(angle)
    return jnp.stack([jnp.stack([c, s, z]), jnp.stack([-s, c, z]), jnp.stack([z, z, o])]).astype(jnp.float32)

#----------------------------------------------------------------------------
# Image operators; x is one image [H, W, C]; returns (transformed, mask) of the same shape.

def _shift_axis(x, shift, taps, weights, axis, valid_lo, valid_hi):
    """y[p] = sum_j weights[j] * x[p - shift - taps[j]] along `axis` (zero outside), then zero outside
    [valid_lo, valid_hi)."""
    n = x.shape[axis]
    p = jnp.arange(n)
    idx = p[:, None] - shift - taps[None, :]                         # [n, taps]
    ok = (idx >= 0) & (idx < n)
    g = jnp.take(x, jnp.clip(idx, 0, n - 1), axis=axis)              # axis replaced by [n, taps]
    wshape = [1] * x.ndim
    wshape[axis] = n
    wfull = (weights[None, :] * ok).reshape(wshape[:axis + 1] + [len(taps)] + wshape[axis + 1:])
    y = jnp.sum(g * wfull, axis=axis + 1)
    keep = ((p >= valid_lo) & (p < valid_hi)).reshape(wshape)
    return y * keep


def apply_integer_translation(x, tx, ty):
    """Operator T_x of Appendix E.1: content moves by (round(tx W), round(ty H)) pixels, zeros enter."""
    h, w, _ = x.shape
    ix = jnp.round(tx * w).astype(jnp.int32)
    iy = jnp.round(ty * h).astype(jnp.int32)
    one = jnp.ones([1], x.dtype)
    zero = jnp.zeros([1], jnp.int32)
    z = _shift_axis(x, ix, zero, one, 1, ix, w + ix)
    z = _shift_axis(z, iy, zero, one, 0, iy, h + iy)
    m = jnp.ones_like(x)
    m = _shift_axis(m, ix, zero, one, 1, ix, w + ix)
    m = _shift_axis(m, iy, zero, one, 0, iy, h + iy)
    return z, m


def apply_fractional_translation(x, tx, ty, a=3):
    """Operator of Appendix E.2: Lanczos-a (6-tap for a=3) separable fractional shift by (tx W, ty H) pixels;
    the output and mask regions are the official ones (mask excludes pixels the filter saw zeros for)."""
    h, w, _ = x.shape
    tx = tx * w
    ty = ty * h
    ix = jnp.floor(tx).astype(jnp.int32)
    iy = jnp.floor(ty).astype(jnp.int32)
    fx = tx - ix
    fy = ty - iy
    b = a - 1
    taps = jnp.arange(a * 2) - b
    filter_x = sinc(taps - fx) * sinc((taps - fx) / a)
    filter_y = sinc(taps - fy) * sinc((taps - fy) / a)
    z = _shift_axis(x, ix, taps, filter_x / filter_x.sum(), 1,
                    jnp.maximum(ix - b, 0), jnp.minimum(ix + a, 0) + w)
    z = _shift_axis(z, iy, taps, filter_y / filter_y.sum(), 0,
                    jnp.maximum(iy - b, 0), jnp.minimum(iy + a, 0) + h)
    px = jnp.arange(w)
    py = jnp.arange(h)
    mx = (px >= jnp.maximum(ix + a, 0)) & (px < jnp.minimum(ix - b, 0) + w)
    my = (py >= jnp.maximum(iy + a, 0)) & (py < jnp.minimum(iy - b, 0) + h)
    m = (my[:, None] & mx[None, :]).astype(x.dtype)[:, :, None] * jnp.ones_like(x)
    return z, m


def construct_affine_bandlimit_filter(mat, a=3, amax=16, aflt=64, up=4, cutoff_in=1, cutoff_out=1):
    """The official oriented low-pass filter for the affine map `mat` [3, 3]: the convolution of input- and
    output-space 2-D sincs, windowed by the convolution of the two Lanczos windows (FFT on a 2*aflt*up-1 grid),
    cropped to 2*amax*up-1 taps and normalised per polyphase component."""
    assert a <= amax < aflt
    mat = jnp.asarray(mat, jnp.float32)
    n = aflt * up * 2 - 1
    taps = jnp.roll((jnp.arange(n, dtype=jnp.float32) + 1) / up - aflt, 1 - aflt * up)
    yi, xi = jnp.meshgrid(taps, taps, indexing='ij')
    xo = xi * mat[0, 0] + yi * mat[0, 1]
    yo = xi * mat[1, 0] + yi * mat[1, 1]
    fi = sinc(xi * cutoff_in) * sinc(yi * cutoff_in)
    fo = sinc(xo * cutoff_out) * sinc(yo * cutoff_out)
    f = jnp.fft.ifftn(jnp.fft.fftn(fi) * jnp.fft.fftn(fo)).real
    wi = lanczos_window(xi, a) * lanczos_window(yi, a)
    wo = lanczos_window(xo, a) * lanczos_window(yo, a)
    wgt = jnp.fft.ifftn(jnp.fft.fftn(wi) * jnp.fft.fftn(wo)).real
    f = f * wgt
    c = (aflt - amax) * up
    f = jnp.roll(f, (aflt * up - 1, aflt * up - 1), axis=(0, 1))[c:-c, c:-c]
    f = jnp.pad(f, [(0, 1), (0, 1)]).reshape(amax * 2, up, amax * 2, up)
    f = f / f.sum(axis=(0, 2), keepdims=True) / (up ** 2)
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def apply_affine_transformation(x, mat, up=4, **filter_kwargs):
    """Band-limited affine resampling (official apply_affine_transformation): upsample by `up` with the
    oriented filter, then bilinear grid_sample; the mask is the filter-valid region, nearest-sampled."""
    h, w, _ = x.shape
    f = construct_affine_bandlimit_filter(mat, up=up, **filter_kwargs)
    p = f.shape[0] // 2
    theta = jnp.linalg.inv(mat)
    theta = theta.at[:2, 2].multiply(2)
    theta = theta.at[0, 2].add(1 / up / w)
    theta = theta.at[1, 2].add(1 / up / h)
    theta = theta.at[0, :].multiply(w / (w + p / up * 2))
    theta = theta.at[1, :].multiply(h / (h + p / up * 2))
    g = affine_grid(theta[None, :2, :3], h, w)
    y = upsample2d(x[None], f, up=up, padding=p)
    z = grid_sample(y, g, mode='bilinear')[0]
    c = p * 2 + 1
    m = jnp.zeros_like(y).at[:, c:-c, c:-c, :].set(1)
    m = grid_sample(m, g, mode='nearest')[0]
    return z, m


def apply_fractional_rotation(x, angle, a=3, **filter_kwargs):
    """Operator R_alpha of Appendix E.3."""
    return apply_affine_transformation(x, rotation_matrix(angle), a=a, amax=a * 2, **filter_kwargs)


def apply_fractional_pseudo_rotation(x, angle, a=3, **filter_kwargs):
    """Operator R*_alpha of Appendix E.3: the frequency content of a rotation, without rotating."""
    f = construct_affine_bandlimit_filter(rotation_matrix(-angle), a=a, amax=a * 2, up=1, **filter_kwargs)
    y = filter2d(x[None], f)[0]
    c = f.shape[0] // 2
    m = jnp.zeros_like(y).at[c:-c, c:-c, :].set(1)
    return y, m

#----------------------------------------------------------------------------

def psnr_from_sums(sq_err, mask_sum):
    """PSNR for images in [-1, 1] (peak-to-peak 2); +inf for a perfect match."""
    with np.errstate(divide='ignore'):
        return float(np.log10(2) * 20 - np.log10(sq_err / mask_sum) * 10)


def equivariance_sums(synth, ws, key, res, translate_max=0.125, rotate_max=1.0, compute_eqt_int=False,
                      compute_eqt_frac=False, compute_eqr=False):
    """Per selected metric, [sum of masked squared errors, sum of mask] over one batch: [num_metrics, 2].

    synth(ws, transforms [N, 3, 3]) -> images [N, H, W, C]; `res` is the image resolution. The reference and
    all transformed images come from one synthesis call over the stacked batch (one compiled graph)."""
    n = ws.shape[0]
    eye = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
    k_int, k_frac, k_rot = jax.random.split(key, 3)
    transforms, jobs = [eye], []
    if compute_eqt_int:                                              # integer translation (EQ-T)
        t = (jax.random.uniform(k_int, (n, 2)) * 2 - 1) * translate_max
        t = jnp.round(t * res) / res
        transforms.append(eye.at[:, :2, 2].set(-t))
        jobs.append(('int', t))
    if compute_eqt_frac:                                             # fractional translation (EQ-T_frac)
        t = (jax.random.uniform(k_frac, (n, 2)) * 2 - 1) * translate_max
        transforms.append(eye.at[:, :2, 2].set(-t))
        jobs.append(('frac', t))
    if compute_eqr:                                                  # rotation (EQ-R)
        angle = (jax.random.uniform(k_rot, (n,)) * 2 - 1) * (rotate_max * np.pi)
        transforms.append(jax.vmap(rotation_matrix)(-angle))
        jobs.append(('rot', angle))
    imgs = synth(jnp.concatenate([ws] * len(transforms)), jnp.concatenate(transforms))
    orig = imgs[:n]
    out = []
    for i, (kind, arg) in enumerate(jobs, 1):
        img = imgs[i * n:(i + 1) * n]
        if kind == 'int':
            ref, mask = jax.vmap(apply_integer_translation)(orig, arg[:, 0], arg[:, 1])
        elif kind == 'frac':
            ref, mask = jax.vmap(apply_fractional_translation)(orig, arg[:, 0], arg[:, 1])
        else:
            ref, ref_mask = jax.vmap(apply_fractional_rotation)(orig, arg)
            img, pseudo_mask = jax.vmap(apply_fractional_pseudo_rotation)(img, arg)
            mask = ref_mask * pseudo_mask
        out.append(jnp.stack([jnp.sum(jnp.square(ref - img) * mask), jnp.sum(mask)]))
    return jnp.stack(out)


def compute_equivariance_metrics(opts, num_samples, batch_size, translate_max=0.125, rotate_max=1,
                                 compute_eqt_int=False, compute_eqt_frac=False, compute_eqr=False):
    if not (compute_eqt_int or compute_eqt_frac or compute_eqr):
        raise ValueError('compute_equivariance_metrics: select at least one of EQ-T, EQ-T_frac, EQ-R')
    g_params, g_buffers, g_cfg = opts.G
    spec = generator.spec(g_cfg)
    if spec.arch != 'stylegan3':
        raise ValueError('Cannot compute equivariance metrics; the given generator does not support '
                         'user-specified image transformations (it is not a StyleGAN3 generator)')
    flags = dict(compute_eqt_int=compute_eqt_int, compute_eqt_frac=compute_eqt_frac, compute_eqr=compute_eqr)
    g_kwargs = {k: v for k, v in opts.G_kwargs.items() if k not in ('truncation_psi', 'truncation_cutoff')}

    mesh = opts.mesh

    def step(gp, gb, key, c):
        k_z, k_eq = jax.random.split(key)
        z = jax.random.normal(k_z, (c.shape[0], spec.z_dim))
        z = jax.lax.with_sharding_constraint(z, NamedSharding(mesh, P('data')))
        ws = generator.mapping(gp, gb, z, c, g_cfg)
        synth = lambda w, m: generator.synthesis(gp, gb, w, g_cfg, noise_mode='const', transform=m, **g_kwargs)
        return equivariance_sums(synth, ws, k_eq, spec.img_resolution, translate_max, rotate_max, **flags)

    run = metric_utils.cached_step(opts, 'equivariance', lambda: step, opts.G_kwargs, translate_max, rotate_max,
                                    flags)
    gp, gb = opts.replicate(g_params), opts.replicate(g_buffers)
    batch = opts.round_batch(batch_size)
    rng = np.random.default_rng(opts.seed)
    base = jax.random.key(opts.seed)
    sums = None
    bar = opts.tqdm(num_samples, 'eq sampling')
    for i, start in enumerate(range(0, num_samples, batch)):
        c = opts.shard(metric_utils.random_labels(opts, batch, rng))
        s = np.asarray(run(gp, gb, jax.random.fold_in(base, i), c), np.float64)
        sums = s if sums is None else sums + s
        bar.update(min(batch, num_samples - start))
    bar.close()
    psnrs = tuple(psnr_from_sums(a, b) for a, b in sums)
    return psnrs[0] if len(psnrs) == 1 else psnrs

"""ADA augmentation (sg3jax/training/augment.py): parity with the official AugmentPipe, known answers per op,
p = 0 identity, gradients, sharding, and the adaptive p update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from scipy.special import erfinv

import golden
from sg3jax.training import augment as augment_lib

H, W = 32, 40          # non-square on purpose: catches swapped axes


def _images(n=2, c=3, seed=0, h=H, w=W):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32))


def _smooth(n=1, c=3, h=H, w=W, period=24.0):
    """Low-frequency test images, where resampling is accurate: f(x, y) per channel, plus f itself."""
    def f(x, y, k=0):
        return np.sin(2 * np.pi * x / period + 0.3 + k) * np.cos(2 * np.pi * y / (period * 1.3) + 1.0 + 2 * k)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    img = np.stack([f(xx, yy, k) for k in range(c)], -1).astype(np.float32)
    return jnp.asarray(np.broadcast_to(img, (n, h, w, c))), f


def _f32(*v):
    return jnp.asarray(v, jnp.float32)


# Jitted once per (spec, parameter names, shape): eager dispatch of the resampling pass is slower than compiling.
_apply = jax.jit(augment_lib.apply_params, static_argnames='spec')

#----------------------------------------------------------------------------
# Spec.

def test_presets_are_the_official_augpipe_specs():
    assert set(augment_lib.PRESETS) == {'blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf',
                                        'bgcfn', 'bgcfnc'}
    bgc = augment_lib.make_spec('bgc')
    on = {k for k in ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast',
                      'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout') if getattr(bgc, k) > 0}
    assert on == {'xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast',
                  'lumaflip', 'hue', 'saturation'}
    assert augment_lib.make_spec(None) == bgc
    assert augment_lib.make_spec({'class_name': 'training.augment.AugmentPipe', **augment_lib.PRESETS['bgc']}) == bgc
    s = augment_lib.AugmentSpec()
    assert (s.xint_max, s.scale_std, s.rotate_max, s.aniso_std, s.xfrac_std, s.brightness_std, s.contrast_std,
            s.hue_max, s.saturation_std, s.imgfilter_bands, s.imgfilter_std, s.noise_std, s.cutout_size) == \
        (0.125, 0.2, 1, 0.2, 0.125, 0.2, 0.5, 1, 1, (1, 1, 1, 1), 1, 0.1, 0.5)
    hash(bgc)                                          # usable as a jit static argument


def test_spec_errors_name_the_field():
    with pytest.raises(ValueError, match='unknown preset'):
        augment_lib.make_spec('bgcx')
    with pytest.raises(ValueError, match='xflipp'):
        augment_lib.make_spec({'xflipp': 1})
    with pytest.raises(ValueError, match='AugmentSpec.scale'):
        augment_lib.AugmentSpec(scale=-1)
    with pytest.raises(ValueError, match='imgfilter_bands'):
        augment_lib.AugmentSpec(imgfilter_bands=(1, 1))
    with pytest.raises(ValueError, match='NHWC'):
        augment_lib.augment(jnp.zeros((4, 4, 3)), jax.random.key(0), 0.5)
    with pytest.raises(ValueError, match='3 channels'):
        augment_lib.augment(jnp.zeros((1, 8, 8, 2)), jax.random.key(0), 0.5, 'color')

#----------------------------------------------------------------------------
# Parity with the official AugmentPipe (debug_percentile mode: every enabled op at a fixed, known value).

def _debug_params(spec, q, n):
    """The parameters the official forward(debug_percentile=q) uses: every enabled op fires, with its value at
    percentile q of its distribution (the post-rotation is 0)."""
    e = float(erfinv(2 * q - 1))
    full = lambda v, *s: jnp.full((n,) + s, v, jnp.float32)
    out = {}
    if spec.xflip: out['xflip'] = full(np.floor(2 * q))
    if spec.rotate90: out['rotate90'] = full(np.floor(4 * q))
    if spec.xint: out['xint'] = full((2 * q - 1) * spec.xint_max, 2)
    if spec.scale: out['scale'] = full(2 ** (e * spec.scale_std))
    if spec.rotate: out['rotate_pre'], out['rotate_post'] = full((2 * q - 1) * np.pi * spec.rotate_max), full(0)
    if spec.aniso: out['aniso'] = full(2 ** (e * spec.aniso_std))
    if spec.xfrac: out['xfrac'] = full(e * spec.xfrac_std, 2)
    if spec.brightness: out['brightness'] = full(e * spec.brightness_std)
    if spec.contrast: out['contrast'] = full(2 ** (e * spec.contrast_std))
    if spec.lumaflip: out['lumaflip'] = full(np.floor(2 * q))
    if spec.hue: out['hue'] = full((2 * q - 1) * np.pi * spec.hue_max)
    if spec.saturation: out['saturation'] = full(2 ** (e * spec.saturation_std))
    if spec.imgfilter: out['imgfilter'] = full(2 ** (e * spec.imgfilter_std), 4)
    if spec.cutout: out['cutout_size'], out['cutout_center'] = full(spec.cutout_size), full(q, 2)
    return out


def test_matches_official_augment_pipe():
    """Every case of augment.npz: official AugmentPipe(**preset)(images, debug_percentile=q) on a smooth and a
    noise image, 32x40 (RGB and 1-channel). Same numbers up to float32 rounding, border pixels included (so the
    static margin, the reflect padding and the half-pixel conventions all agree)."""
    data = golden.load('augment')
    cfg = golden.json_field(data, 'config_json')
    x = np.asarray(data['images'])                              # [2, H, W, 3]
    qs = cfg['percentiles']
    # One compiled call per preset: the percentiles are stacked along the batch, since parameters are per sample.
    # 1-channel inputs only where the colour path differs (the 'color' preset).
    cases = [(name, False) for name in cfg['presets']] + [('color', True)]
    worst = {}
    for name, gray in cases:
        spec = augment_lib.make_spec(cfg['presets'][name])
        xi = x[..., :1] if gray else x
        batch = np.concatenate([xi] * len(qs))
        prm = [_debug_params(spec, q, len(xi)) for q in qs]
        prm = jax.tree.map(lambda *a: jnp.concatenate(a), *prm)
        y = np.asarray(_apply(jnp.asarray(batch), prm, spec=spec))
        ref = np.concatenate([data[f'{name}{"_gray" if gray else ""}_q{q}'] for q in qs])
        worst[name + ('_gray' if gray else '')] = float(np.abs(y - ref).max())
    assert len(worst) >= 10
    bad = {k: e for k, e in worst.items() if e > 1e-4}
    assert not bad, f'differs from the official AugmentPipe: {bad} (all: {worst})'


def test_official_blits_are_not_exact_pixel_copies():
    """Official behaviour kept on purpose: x-flip and 90-degree rotations go through the same wavelet resampling
    as everything else, and sym6 is not symmetric, so a mirrored sampling grid leaves a small phase error: on a
    smooth image the result is close to jnp.flip / jnp.rot90, not equal (the golden test pins the exact values).
    Integer translations, in contrast, are exact (reflect-padded shifts)."""
    x, _ = _smooth(n=4)
    inner = np.s_[3:-3, 3:-3]                                   # the border also sees the reflection's phase
    y = _apply(x, {'xflip': _f32(1, 1, 0, 1)}, spec=augment_lib.AugmentSpec(xflip=1))
    np.testing.assert_allclose(y[:, 3:-3, 3:-3], jnp.flip(x, axis=2).at[2].set(x[2])[:, 3:-3, 3:-3], atol=0.03)
    np.testing.assert_allclose(y, jnp.flip(x, axis=2).at[2].set(x[2]), atol=0.05)
    assert bool(jnp.all(y[2] == x[2]))                          # not drawn: untouched
    assert float(jnp.abs(y[0] - jnp.flip(x[0], axis=1)).max()) > 1e-3   # ...and the flip is not exact
    xs = x[:, :, :H]                                            # square, for rotations
    k = [0, 1, 2, 3]
    y = _apply(xs, {'rotate90': _f32(*k)}, spec=augment_lib.AugmentSpec(rotate90=1))
    assert bool(jnp.all(y[0] == xs[0]))
    for i in range(1, 4):                                       # counter-clockwise quarter turns
        np.testing.assert_allclose(y[i][inner], jnp.rot90(xs[i], k[i], axes=(0, 1))[inner], atol=0.03)
    # Integer translation: out[y, x] = in[y - ty, x - tx] of the reflect-padded image, everywhere.
    x = _images(n=2)
    t = jnp.asarray([[3 / W, -2 / H], [-5 / W, 4 / H]], jnp.float32)
    y = _apply(x, {'xint': t}, spec=augment_lib.AugmentSpec(xint=1))
    xp = np.pad(np.asarray(x), ((0, 0), (8, 8), (8, 8), (0, 0)), mode='reflect')
    for b, (tx, ty) in enumerate([(3, -2), (-5, 4)]):
        np.testing.assert_allclose(y[b], xp[b, 8 - ty:8 - ty + H, 8 - tx:8 - tx + W], atol=2e-6)


def test_general_transform_matches_the_analytic_image():
    """Scale, rotations, anisotropy and a fractional shift together: for a smooth f, output(p) = f(G_inv p)
    (pixel coordinates centred on the image) wherever the source lies inside the image. This pins the pivot,
    the direction of every op and the half-pixel conventions independently of the golden data."""
    x, f = _smooth(n=1, period=24.0)
    prm = {'scale': _f32(1.2), 'rotate_pre': _f32(0.4), 'aniso': _f32(0.9), 'rotate_post': _f32(-1.1),
           'xfrac': _f32([[0.031, -0.047]])[0]}
    y = np.asarray(_apply(x, prm, spec='geom'))[0]
    g = np.asarray(augment_lib.geometric_matrix(prm, 1, H, W))[0]
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing='ij')
    cx, cy = (W - 1) / 2, (H - 1) / 2
    sx = g[0, 0] * (xx - cx) + g[0, 1] * (yy - cy) + g[0, 2] + cx
    sy = g[1, 0] * (xx - cx) + g[1, 1] * (yy - cy) + g[1, 2] + cy
    inside = (sx > 3) & (sx < W - 4) & (sy > 3) & (sy < H - 4)
    assert inside.sum() > 300
    for k in range(3):
        np.testing.assert_allclose(y[..., k][inside], f(sx, sy, k)[inside], atol=0.02)

#----------------------------------------------------------------------------
# Colour, filter, corruptions: known answers.

def test_color_known_answers():
    x = _images(n=1)
    gray = jnp.broadcast_to(x[..., :1], x.shape)
    spec = 'color'
    ap = lambda img, **prm: _apply(img, {k: _f32(v) for k, v in prm.items()}, spec=spec)
    np.testing.assert_allclose(ap(x, brightness=0.3), x + 0.3, atol=1e-6)
    np.testing.assert_allclose(ap(x, contrast=1.7), x * 1.7, atol=1e-6)         # around 0, not the image mean
    np.testing.assert_allclose(ap(gray, lumaflip=1), -gray, atol=1e-6)          # gray = pure luma: negated
    np.testing.assert_allclose(ap(x, lumaflip=1), x - 2 * x.mean(-1, keepdims=True), atol=1e-6)
    # A hue rotation by 120 degrees around (1,1,1) permutes the channels: (r, g, b) -> (b, r, g).
    np.testing.assert_allclose(ap(x, hue=2 * np.pi / 3), x[..., [2, 0, 1]], atol=1e-5)
    np.testing.assert_allclose(ap(x, saturation=0.0), jnp.broadcast_to(x.mean(-1, keepdims=True), x.shape),
                               atol=1e-6)
    np.testing.assert_allclose(ap(gray, hue=1.0, saturation=3.0), gray, atol=1e-6)  # gray has no chroma
    # Composition order: brightness first, then contrast: (x + b) * c.
    np.testing.assert_allclose(ap(x, brightness=0.2, contrast=0.5), (x + 0.2) * 0.5, atol=1e-6)
    # 1-channel images: brightness, contrast and luma flip act on the value; hue and saturation do not exist.
    g1 = x[..., :1]
    np.testing.assert_allclose(ap(g1, brightness=0.1, contrast=2.0, lumaflip=1, hue=1.0, saturation=0.0),
                               -((g1 + 0.1) * 2.0), atol=1e-6)
    assert set(augment_lib.sample_params(jax.random.key(0), 1.0, spec, g1.shape)) == {'brightness', 'contrast',
                                                                                        'lumaflip'}


def test_imgfilter_known_answers():
    bank = augment_lib.HZ_FBANK
    assert bank.shape == (4, 43)
    delta = np.zeros(43, np.float32)
    delta[21] = 1
    np.testing.assert_allclose(bank.sum(0), delta, atol=1e-6)                 # unit gains: identity
    np.testing.assert_allclose(bank[1:].sum(1), 0, atol=1e-6)                 # high bands carry no DC
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-7)                # symmetric (zero phase)
    # A constant image only has DC, and the filter runs along W and then H, so band 0 with gain t scales it by
    # (t / sqrt((10 t^2 + 3) / 13))^2.
    t = 2.0
    x = jnp.full((1, H, W, 3), 0.4, jnp.float32)
    y = _apply(x, {'imgfilter': _f32([[t, 1, 1, 1]])[0]}, spec='filter')
    np.testing.assert_allclose(y, 0.4 * (t * t) / ((10 * t * t + 3) / 13), rtol=1e-5)
    # Gain on band 1 only: DC is divided by the power normalisation (the image keeps its expected power).
    y = _apply(x, {'imgfilter': _f32([[1, t, 1, 1]])[0]}, spec='filter')
    np.testing.assert_allclose(y, 0.4 / ((12 + t * t) / 13), rtol=1e-5)


def test_noise_and_cutout():
    x = jnp.zeros((2, 64, 64, 3), jnp.float32) + 0.25
    prm = {'noise': _f32(0.3, 0.0), 'noise_key': jax.random.key(7)}
    y = _apply(x, prm, spec='noise')
    assert abs(float(jnp.std(y[0] - x[0])) - 0.3) < 0.02
    assert bool(jnp.all(y[1] == x[1]))
    # Cutout of half the size centred in the middle: pixels whose centres are within 1/4 of the size of the centre
    # (in both axes) are zeroed, i.e. columns 10..29 and rows 8..23 of a 40x32 image.
    x = _images(n=2)
    prm = {'cutout_size': _f32(0.5, 0.0), 'cutout_center': _f32([0.5, 0.5], [0.5, 0.5])}
    y = np.asarray(_apply(x, prm, spec='cutout'))
    hole = np.zeros((H, W), bool)
    hole[8:24, 10:30] = True
    assert np.all(y[0][hole] == 0) and np.array_equal(y[0][~hole], np.asarray(x)[0][~hole])
    assert np.array_equal(y[1], np.asarray(x)[1])

#----------------------------------------------------------------------------
# The random pipeline.

# The random-pipeline tests share one jitted augment and one input shape, so 'bgc' compiles once for all of them.
_augment = jax.jit(augment_lib.augment, static_argnames='spec')
_N, _R = 8, 16


def test_p0_is_bit_exact_identity():
    """p = 0 (traced) returns the input bit for bit for the full pipeline, -0.0 included."""
    x = _images(n=4).at[0, 0, 0, 0].set(-0.0)
    y = _augment(x, jax.random.key(3), jnp.float32(0.0), spec='bgcfnc')
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.array_equal(np.asarray(y).view(np.uint32), np.asarray(x).view(np.uint32))


def test_random_pipeline_shapes_keys_and_no_recompile():
    x = _images(n=_N, h=_R, w=_R)
    a = _augment(x, jax.random.key(1), jnp.float32(1.0), spec='bgc')
    size = _augment._cache_size()
    # The same key in a separately traced program: the draws come from the key alone (a draw made when tracing,
    # from Python's or NumPy's generator, would differ between the two programs).
    b = jax.jit(lambda x, k, p: augment_lib.augment(x, k, p, 'bgc'))(x, jax.random.key(1), jnp.float32(1.0))
    c = _augment(x, jax.random.key(2), jnp.float32(1.0), spec='bgc')
    d = _augment(x, jax.random.key(1), jnp.float32(0.3), spec='bgc')
    assert _augment._cache_size() == size                      # p and key are traced: no recompilation
    assert a.shape == x.shape and a.dtype == x.dtype and bool(jnp.all(jnp.isfinite(a)))
    assert np.array_equal(np.asarray(a), np.asarray(b))       # same key, same augmentation
    assert not np.allclose(a, c)                               # different key, different augmentation
    assert not np.allclose(a, d)
    assert not np.allclose(a, x)


def test_gradients_flow_to_the_input():
    """bgc at p = 1: the input gradient is finite and nonzero, and it is the true transpose: per sample the
    pipeline is affine, aug(x) = L x + b with b = aug(0), so <grad_x <aug(x), w>, x> = <aug(x) - aug(0), w>."""
    x = _images(n=_N, h=_R, w=_R)
    w = _images(n=_N, h=_R, w=_R, seed=5)
    key, p = jax.random.key(4), jnp.float32(1.0)
    g = jax.jit(jax.grad(lambda x, k, p: jnp.sum(augment_lib.augment(x, k, p, 'bgc') * w)))(x, key, p)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    lin = jnp.sum((_augment(x, key, p, spec='bgc') - _augment(jnp.zeros_like(x), key, p, spec='bgc')) * w)
    np.testing.assert_allclose(float(jnp.sum(g * x)), float(lin), rtol=1e-4)


def test_sharded_batch_equals_unsharded():
    """A batch sharded over the 8 simulated devices on a 'data' axis gives the same values (the draws are
    partitionable threefry, the ops are per sample)."""
    devices = np.array(jax.devices()[:8])
    assert len(devices) == 8
    mesh = Mesh(devices, ('data',))
    x = _images(n=_N, h=_R, w=_R)
    key = jax.random.key(11)
    ref = _augment(x, key, jnp.float32(0.8), spec='bgc')
    xs = jax.device_put(x, NamedSharding(mesh, P('data')))
    out = _augment(xs, key, jnp.float32(0.8), spec='bgc')
    assert out.sharding.is_equivalent_to(xs.sharding, 4)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert not np.allclose(ref, x)


def test_firing_probabilities():
    """Per-sample firing frequencies: p * multiplier per op, and P(pre or post rotation) = p."""
    n, p = 4000, 0.4
    prm = augment_lib.sample_params(jax.random.key(0), jnp.float32(p), 'bgcfnc', (n, 8, 8, 3))
    freq = lambda v, ident: float(jnp.mean(jnp.any((v != ident).reshape(n, -1), axis=1)))
    tol = 0.03                                                       # ~4 sigma at n = 4000
    assert abs(freq(prm['xflip'], 0) - p / 2) < tol                  # fired and drew "flip"
    assert abs(freq(prm['rotate90'], 0) - p * 3 / 4) < tol           # fired and drew k != 0
    for name, ident in (('xint', 0), ('scale', 1), ('aniso', 1), ('xfrac', 0), ('brightness', 0),
                        ('contrast', 1), ('hue', 0), ('saturation', 1), ('noise', 0), ('cutout_size', 0)):
        assert abs(freq(prm[name], ident) - p) < tol, name
    assert abs(freq(prm['lumaflip'], 0) - p / 2) < tol
    rot = (prm['rotate_pre'] != 0) | (prm['rotate_post'] != 0)
    assert abs(float(jnp.mean(rot)) - p) < tol
    bands = prm['imgfilter'] != 1
    assert abs(float(jnp.mean(bands)) - p) < tol                     # each band independently
    # p > 1 is allowed (no upper clamp officially): every op fires.
    prm = augment_lib.sample_params(jax.random.key(1), 2.0, 'bgc', (1000, 8, 8, 3))
    assert float(jnp.mean(prm['scale'] != 1)) == 1.0

#----------------------------------------------------------------------------
# Adaptive p.

def test_ada_update():
    step = 64 * 4 / (500 * 1000)                          # batch 64, interval 4, ada_kimg 500
    up = augment_lib.ada_update(0.1, sign_sum=0.8 * 256, count=256, target=0.6, batch_size=64, interval=4, ada_kimg=500)
    down = augment_lib.ada_update(0.1, sign_sum=0.2 * 256, count=256, target=0.6, batch_size=64, interval=4,
                                  ada_kimg=500)
    np.testing.assert_allclose([float(up), float(down)], [0.1 + step, 0.1 - step], rtol=1e-6)
    assert float(augment_lib.ada_update(0.0, -10.0, 20, batch_size=64)) == 0.0                 # clamped at 0
    assert float(augment_lib.ada_update(1.0, 20.0, 20, batch_size=64)) > 1.0         # no upper clamp (official)
    assert float(augment_lib.ada_update(0.3, 0.0, 0, batch_size=64)) == pytest.approx(0.3)     # nothing accumulated
    assert float(augment_lib.ada_update(0.3, 0.6 * 10, 10, target=0.6, batch_size=64)) == pytest.approx(0.3)  # sign(0)
    # The accumulator: signs of real logits over several minibatches, under jit.
    stats = augment_lib.ada_stats_init()
    acc = jax.jit(augment_lib.ada_accumulate)
    stats = acc(stats, jnp.asarray([[1.5], [-0.2], [3.0], [0.0]]))
    stats = acc(stats, jnp.asarray([[2.0], [1.0], [-1.0], [4.0]]))
    assert float(stats['sign_sum']) == 3.0 and float(stats['count']) == 8.0
    p = jax.jit(lambda p, s: augment_lib.ada_update(p, s['sign_sum'], s['count'], target=0.6, batch_size=4,
                                          interval=2))(jnp.float32(0.5), stats)
    np.testing.assert_allclose(float(p), 0.5 - 4 * 2 / 500e3, rtol=1e-6)           # 3/8 < 0.6: down

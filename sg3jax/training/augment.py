"""Adaptive discriminator augmentation (ADA): the official `training/augment.py` AugmentPipe as pure functions.

Karras et al., "Training Generative Adversarial Networks with Limited Data" (NeurIPS 2020), Section 2 and
Appendix B. Every image D sees (real and generated alike) goes through the same random pipeline; each op fires per
sample with probability `p * multiplier`, and `p` is tuned during training so that D's overfitting heuristic
r_t = E[sign(D(x_real))] stays near a target (Section 3, `ada_update`).

Pipeline, in the official order (images NHWC, float, roughly [-1, 1]):
  1. Geometric ops compose into one inverse 3x3 matrix per sample, G_inv: output pixel -> input pixel, in pixel
     units with the origin at the image centre. xflip, rotate90, integer translation (pixel blitting), then
     isotropic scaling, pre-rotation, anisotropic scaling, post-rotation, fractional translation.
     They are executed in ONE resampling pass: reflect-pad, 2x upsample with the sym6 wavelet low-pass (the
     official Hz_geom), bilinear sampling (grid_sample: align_corners=False, zero padding), 2x downsample with the
     same filter flipped, crop.
  2. Colour ops compose into one 4x4 homogeneous matrix per sample, C: colour_in -> colour_out. brightness,
     contrast, luma flip, hue rotation, saturation, all around the luma axis v = (1, 1, 1) / sqrt(3).
  3. imgfilter: a random per-band gain over a 4-band filter bank built from the sym2 wavelet.
  4. noise: additive Gaussian noise with a per-sample, half-normal standard deviation.
  5. cutout: one zeroed rectangle of half the image size per sample.

API:
  augment(images, key, p, spec)          -> images    draw the parameters, then apply them
  sample_params(key, p, spec, shape)     -> params    the per-sample draws (a dict of [N, ...] arrays)
  apply_params(images, params, spec)     -> images    deterministic: tests fix `params` to known values
  geometric_matrix / color_matrix        -> [N,3,3] / [N,4,4] from params
  ada_stats_init / ada_accumulate / ada_update          the adaptive p heuristic (training_loop.py)

Deviations from the official code, all numerical rather than statistical (see the comments where they arise):
  * Static padding margin: the official margin depends on the batch's drawn matrices; under jit it is the
    largest margin the enabled ops can ask for (`_static_margin`). Values are the same up to float rounding.
  * A sample whose matrix is exactly the identity (no geometric / colour op fired for it) passes through that
    stage untouched; the official code still resamples it, which returns it up to ~1e-6 rounding. This makes
    p = 0 the exact identity, bit for bit, with a traced p.
  * The draws come from JAX's counter-based RNG (fixed columns of one uniform and one normal block per call), so
    they differ from torch's sequence; the distributions are the official ones.
Checked against the official AugmentPipe (forward with debug_percentile, every preset, RGB and 1-channel, border
pixels included): equal to ~3e-5 (tests/test_augment.py, golden file augment.npz).

Kept on purpose because the official code does it: x-flips and quarter turns are NOT exact pixel copies. They go
through the same wavelet resampling as everything else, and sym6 is not symmetric, so a mirrored sampling grid
leaves a small phase error (about 0.03 on a smooth image, more on noise). Integer translations are exact.
Cost: with any of scale/rotate/aniso/xfrac enabled the static margin is size - 1, so the pass upsamples a
(3H x 3W) reflect-padded image; the official margin is a batch maximum that under rotation is typically ~H/2.
"""

import dataclasses
from typing import Mapping, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sg3jax.ops import downsample2d, setup_filter, upsample2d

#----------------------------------------------------------------------------
# Filters (the official coefficient tables of the wavelet low-pass filters; numbers, not code).

# Symlet-6 decomposition low-pass: the official Hz_geom, for the 2x up/down around the geometric resampling.
# An orthogonal wavelet, so downsample(upsample(x)) with the flipped filter is the identity (up to rounding).
_SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
         0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
         -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]
# Symlet-2 (= Daubechies-2) low-pass: the basis of the imgfilter filter bank.
_SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]

HZ_GEOM = setup_filter(_SYM6)          # [12] separable, sums to 1 (as the official buffer)
HZ_PAD = HZ_GEOM.shape[0] // 4                   # = 3: the official Hz_pad, the crop margin in input pixels

# Expected power spectrum of natural images over the 4 bands (1/f falloff), used to keep the filtered image's
# overall power unchanged (official `expected_power`).
_EXPECTED_POWER = np.array([10, 1, 1, 1], np.float32) / 13


def _imgfilter_bank() -> np.ndarray:
    """The official Hz_fbank: [4 bands, 43 taps], band 0 the lowest octave, band 3 the highest.

    Built recursively as an octave filter bank: H_lo2 = H(z) H(z^-1) / 2 and H_hi2 = H(-z) H(-z^-1) / 2 are the
    power-complementary low/high-pass pair of sym2 (H_lo2 + H_hi2 = delta). At each of 3 levels every band so far
    is stretched by 2 (zero insertion) and low-passed by H_lo2, and band i receives the high-pass H_hi2 centred.
    The rows therefore sum to a delta: unit gains reproduce the image.
    """
    lo = np.asarray(_SYM2, np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)                     # H(-z)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)                                        # [band, tap]; band 0 starts as the delta
    for i in range(1, 4):
        up = np.zeros([4, bank.shape[1] * 2 - 1])
        up[:, ::2] = bank                                      # zero insertion, no trailing zero
        bank = np.stack([np.convolve(row, lo2) for row in up])
        c0 = (bank.shape[1] - hi2.size) // 2
        bank[i, c0:c0 + hi2.size] += hi2
    return bank.astype(np.float32)


HZ_FBANK = _imgfilter_bank()                     # [4, 43]

#----------------------------------------------------------------------------
# Spec: the official AugmentPipe constructor arguments.

_GEOM_OPS = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac')
_COLOR_OPS = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """Probability multipliers (0 = off) and distribution parameters, with the official names and defaults.
    Frozen and hashable, so it can be a static argument of jax.jit."""
    # Pixel blitting.
    xflip: float = 0             # x-flip.
    rotate90: float = 0          # Rotation by a multiple of 90 degrees.
    xint: float = 0              # Integer translation.
    xint_max: float = 0.125      # Range of integer translation, relative to the image size.
    # General geometric transformations.
    scale: float = 0             # Isotropic scaling.
    rotate: float = 0            # Arbitrary rotation (applied before and after aniso; P(either) = p).
    aniso: float = 0             # Anisotropic scaling.
    xfrac: float = 0             # Fractional translation.
    scale_std: float = 0.2       # Log2 standard deviation of isotropic scaling.
    rotate_max: float = 1        # Range of arbitrary rotation, 1 = full circle.
    aniso_std: float = 0.2       # Log2 standard deviation of anisotropic scaling.
    xfrac_std: float = 0.125     # Standard deviation of fractional translation, relative to the image size.
    # Colour transformations.
    brightness: float = 0        # Additive brightness.
    contrast: float = 0          # Multiplicative contrast (around 0, the middle of [-1, 1]).
    lumaflip: float = 0          # Luma flip (Householder reflection of the luma axis).
    hue: float = 0               # Hue rotation (around the luma axis); RGB only.
    saturation: float = 0        # Saturation (scaling orthogonal to the luma axis); RGB only.
    brightness_std: float = 0.2  # Standard deviation of brightness.
    contrast_std: float = 0.5    # Log2 standard deviation of contrast.
    hue_max: float = 1           # Range of hue rotation, 1 = full circle.
    saturation_std: float = 1    # Log2 standard deviation of saturation.
    # Image-space filtering.
    imgfilter: float = 0         # Image-space filtering.
    imgfilter_bands: tuple = (1, 1, 1, 1)  # Probability multipliers of the individual frequency bands.
    imgfilter_std: float = 1     # Log2 standard deviation of the band amplification.
    # Image-space corruptions.
    noise: float = 0             # Additive RGB noise.
    cutout: float = 0            # Cutout.
    noise_std: float = 0.1       # Standard deviation of the additive noise.
    cutout_size: float = 0.5     # Size of the cutout rectangle, relative to the image size.

    def __post_init__(self):
        object.__setattr__(self, 'imgfilter_bands', tuple(float(b) for b in self.imgfilter_bands))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != 'imgfilter_bands' and not (np.isfinite(v) and v >= 0):
                raise ValueError(f'AugmentSpec.{f.name} must be a finite number >= 0, got {v!r}')
        if len(self.imgfilter_bands) != HZ_FBANK.shape[0] or min(self.imgfilter_bands) < 0:
            raise ValueError(f'AugmentSpec.imgfilter_bands must be {HZ_FBANK.shape[0]} multipliers >= 0, got '
                             f'{self.imgfilter_bands!r}')

    @property
    def has_geometric(self) -> bool:
        return any(getattr(self, k) > 0 for k in _GEOM_OPS)

    @property
    def has_color(self) -> bool:
        return any(getattr(self, k) > 0 for k in _COLOR_OPS)


# The official --augpipe presets (stylegan2-ada-pytorch train.py `augpipe_specs`); StyleGAN3's train.py always
# uses 'bgc'.
PRESETS = {
    'blit':   dict(xflip=1, rotate90=1, xint=1),
    'geom':   dict(scale=1, rotate=1, aniso=1, xfrac=1),
    'color':  dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    'bgc':    dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'bgcf':   dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1),
    'bgcfn':  dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1),
    'bgcfnc': dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1, cutout=1),
}
DEFAULT_PRESET = 'bgc'


def make_spec(spec: Union[AugmentSpec, str, Mapping, None] = DEFAULT_PRESET) -> AugmentSpec:
    """AugmentSpec from an AugmentSpec, a preset name (PRESETS) or a mapping of AugmentPipe kwargs (the official
    augment_kwargs; a 'class_name' entry is ignored). None means the default preset 'bgc'."""
    if spec is None:
        spec = DEFAULT_PRESET
    if isinstance(spec, AugmentSpec):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f'augment spec: unknown preset {spec!r}; expected one of {sorted(PRESETS)}')
        return AugmentSpec(**PRESETS[spec])
    if isinstance(spec, Mapping):
        kwargs = {k: v for k, v in spec.items() if k != 'class_name'}
        known = {f.name for f in dataclasses.fields(AugmentSpec)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f'augment spec: unknown AugmentPipe argument(s) {unknown}; expected some of '
                             f'{sorted(known)}')
        return AugmentSpec(**kwargs)
    raise TypeError(f'augment spec must be an AugmentSpec, a preset name or a mapping, got {type(spec).__name__}')

#----------------------------------------------------------------------------
# Homogeneous matrices, batched: every entry is a scalar or an [N] array; result [N, R, C].

def _matrix(rows, n):
    return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (n,)) for e in row], axis=-1)
                      for row in rows], axis=-2)


def _mm(a, b):
    # HIGHEST: GPUs would otherwise run f32 matmuls in TF32 (10-bit mantissa), which moves a sample point
    # hundreds of pixels from the centre by ~0.1 px; the official loop disables TF32 for the same reason.
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _translate2d(tx, ty, n):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n)


def _scale2d(sx, sy, n):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n)


def _rotate2d(theta, n):
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n)


def _translate3d(tx, ty, tz, n):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], n)


def _scale3d(sx, sy, sz, n):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], n)


def _rotate3d(v, theta, n):
    """Rotation by `theta` around the unit axis `v` (Rodrigues), homogeneous 4x4."""
    vx, vy, vz = (float(e) for e in v[:3])
    s, c = jnp.sin(theta), jnp.cos(theta)
    cc = 1 - c
    return _matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                    [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                    [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                    [0, 0, 0, 1]], n)


# Luma axis of the colour ops (official: equal weights, not Rec.601), homogeneous (w = 0: a direction).
_LUMA = np.array([1, 1, 1, 0], np.float64) / np.sqrt(3)
_LUMA_OUTER = np.outer(_LUMA, _LUMA).astype(np.float32)      # v v^T: projection onto the luma axis

#----------------------------------------------------------------------------
# Parameter draws.

# The draws: one uniform and one normal [N, columns] block per call, each op owning fixed columns, so enabling or
# disabling one op never changes another's draws, and the RNG is two calls rather than ~40 (much faster to compile).
def _columns(spec):
    cols, start = {}, 0
    for name, width in spec:
        cols[name] = slice(start, start + width)
        start += width
    return cols, start


_UNIFORM_COLS, _NUM_UNIFORM = _columns([
    ('xflip', 1), ('xflip_fire', 1), ('rotate90', 1), ('rotate90_fire', 1), ('xint', 2), ('xint_fire', 1),
    ('scale_fire', 1), ('rotate_pre', 1), ('rotate_pre_fire', 1), ('aniso_fire', 1), ('rotate_post', 1),
    ('rotate_post_fire', 1), ('xfrac_fire', 1), ('brightness_fire', 1), ('contrast_fire', 1), ('lumaflip', 1),
    ('lumaflip_fire', 1), ('hue', 1), ('hue_fire', 1), ('saturation_fire', 1), ('imgfilter_fire', 4),
    ('noise_fire', 1), ('cutout_fire', 1), ('cutout_center', 2)])
_NORMAL_COLS, _NUM_NORMAL = _columns([
    ('scale', 1), ('aniso', 1), ('xfrac', 2), ('brightness', 1), ('contrast', 1), ('saturation', 1),
    ('imgfilter', 4), ('noise', 1)])


def sample_params(key, p, spec, shape) -> dict:
    """Draws every enabled op's per-sample parameters, as the official AugmentPipe.forward.

    key:   a jax.random key.
    p:     overall probability multiplier, a (traced) float scalar: changing it never recompiles.
    spec:  AugmentSpec, preset name or mapping (static).
    shape: the image batch shape [N, H, W, C].
    Returns a dict with one entry per enabled op holding the drawn value where the op fired for that sample and
    the identity value where it did not (the official `torch.where(rand < prob * p, value, identity)`):
      xflip [N] in {0,1};  rotate90 [N] in {0..3} (counter-clockwise quarter turns);  xint [N,2] (tx, ty)
      relative to the size (rounded to pixels when applied);  scale [N];  rotate_pre, rotate_post [N] radians;
      aniso [N];  xfrac [N,2] relative;  brightness [N];  contrast [N];  lumaflip [N] in {0,1};  hue [N]
      radians;  saturation [N];  imgfilter [N,4] band gains before power normalisation;  noise [N] sigma and
      noise_key;  cutout_size [N] (0 = not fired) and cutout_center [N,2] (x, y) relative.
    """
    spec = make_spec(spec)
    n, _, _, c = shape
    p = jnp.asarray(p, jnp.float32)
    k_uniform, k_normal, k_noise = jax.random.split(key, 3)
    u_all = jax.random.uniform(k_uniform, (n, _NUM_UNIFORM))
    z_all = jax.random.normal(k_normal, (n, _NUM_NORMAL))

    def squeeze(a):
        return a[:, 0] if a.shape[1] == 1 else a

    def uniform(name):
        return squeeze(u_all[:, _UNIFORM_COLS[name]])

    def normal(name):
        return squeeze(z_all[:, _NORMAL_COLS[name]])

    def fired(name, prob, keepdims=False):
        # rand in [0, 1) < prob: never true at prob 0, so p = 0 draws identities only.
        r = u_all[:, _UNIFORM_COLS[name + '_fire']]
        return (r if keepdims or r.shape[1] > 1 else r[:, 0]) < prob

    out = {}
    # Pixel blitting.
    if spec.xflip > 0:
        out['xflip'] = jnp.where(fired('xflip', spec.xflip * p), jnp.floor(uniform('xflip') * 2), 0.0)
    if spec.rotate90 > 0:
        out['rotate90'] = jnp.where(fired('rotate90', spec.rotate90 * p), jnp.floor(uniform('rotate90') * 4), 0.0)
    if spec.xint > 0:
        t = (uniform('xint') * 2 - 1) * spec.xint_max
        out['xint'] = jnp.where(fired('xint', spec.xint * p, keepdims=True), t, 0.0)
    # General geometric transformations.
    if spec.scale > 0:
        s = jnp.exp2(normal('scale') * spec.scale_std)
        out['scale'] = jnp.where(fired('scale', spec.scale * p), s, 1.0)
    if spec.rotate > 0:
        # Two independent rotations, each with probability p_rot, so that P(pre or post) = rotate * p.
        p_rot = 1 - jnp.sqrt(jnp.clip(1 - spec.rotate * p, 0, 1))
        for name in ('rotate_pre', 'rotate_post'):
            theta = (uniform(name) * 2 - 1) * np.pi * spec.rotate_max
            out[name] = jnp.where(fired(name, p_rot), theta, 0.0)
    if spec.aniso > 0:
        s = jnp.exp2(normal('aniso') * spec.aniso_std)
        out['aniso'] = jnp.where(fired('aniso', spec.aniso * p), s, 1.0)
    if spec.xfrac > 0:
        t = normal('xfrac') * spec.xfrac_std
        out['xfrac'] = jnp.where(fired('xfrac', spec.xfrac * p, keepdims=True), t, 0.0)
    # Colour transformations (hue and saturation need colour: skipped for 1-channel images, as officially).
    if spec.brightness > 0:
        b = normal('brightness') * spec.brightness_std
        out['brightness'] = jnp.where(fired('brightness', spec.brightness * p), b, 0.0)
    if spec.contrast > 0:
        cs = jnp.exp2(normal('contrast') * spec.contrast_std)
        out['contrast'] = jnp.where(fired('contrast', spec.contrast * p), cs, 1.0)
    if spec.lumaflip > 0:
        out['lumaflip'] = jnp.where(fired('lumaflip', spec.lumaflip * p), jnp.floor(uniform('lumaflip') * 2), 0.0)
    if spec.hue > 0 and c > 1:
        theta = (uniform('hue') * 2 - 1) * np.pi * spec.hue_max
        out['hue'] = jnp.where(fired('hue', spec.hue * p), theta, 0.0)
    if spec.saturation > 0 and c > 1:
        s = jnp.exp2(normal('saturation') * spec.saturation_std)
        out['saturation'] = jnp.where(fired('saturation', spec.saturation * p), s, 1.0)
    # Image-space filtering: each band fires independently with probability imgfilter * p * band multiplier.
    if spec.imgfilter > 0:
        t = jnp.exp2(normal('imgfilter') * spec.imgfilter_std)
        prob = spec.imgfilter * p * jnp.asarray(spec.imgfilter_bands, jnp.float32)
        out['imgfilter'] = jnp.where(fired('imgfilter', prob), t, 1.0)
    # Image-space corruptions.
    if spec.noise > 0:
        sigma = jnp.abs(normal('noise')) * spec.noise_std
        out['noise'] = jnp.where(fired('noise', spec.noise * p), sigma, 0.0)
        out['noise_key'] = k_noise
    if spec.cutout > 0:
        out['cutout_size'] = jnp.where(fired('cutout', spec.cutout * p), jnp.float32(spec.cutout_size), 0.0)
        out['cutout_center'] = uniform('cutout_center')
    return out

#----------------------------------------------------------------------------
# Matrices from parameters.

def geometric_matrix(params: dict, n: int, height: int, width: int):
    """G_inv [N,3,3]: output pixel -> input pixel (centred pixel units), composed in the official order.
    A missing entry is that op's identity; with every op at its identity value the result is exactly eye(3)."""
    g = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
    if 'xflip' in params:                      # scale2d_inv(1 - 2i, 1): x -> -x
        g = _mm(g, _scale2d(1 / (1 - 2 * params['xflip']), 1, n))
    if 'rotate90' in params:                   # rotate2d_inv(-pi/2 i): counter-clockwise quarter turns
        g = _mm(g, _rotate2d(np.pi / 2 * params['rotate90'], n))
    if 'xint' in params:                       # translate2d_inv of whole pixels (round half to even, as torch)
        t = params['xint']
        g = _mm(g, _translate2d(-jnp.round(t[:, 0] * width), -jnp.round(t[:, 1] * height), n))
    if 'scale' in params:                      # scale2d_inv(s, s)
        s = params['scale']
        g = _mm(g, _scale2d(1 / s, 1 / s, n))
    if 'rotate_pre' in params:                 # rotate2d_inv(-theta), before the anisotropic scaling
        g = _mm(g, _rotate2d(params['rotate_pre'], n))
    if 'aniso' in params:                      # scale2d_inv(s, 1 / s)
        s = params['aniso']
        g = _mm(g, _scale2d(1 / s, s, n))
    if 'rotate_post' in params:                # rotate2d_inv(-theta), after the anisotropic scaling
        g = _mm(g, _rotate2d(params['rotate_post'], n))
    if 'xfrac' in params:                      # translate2d_inv(tx W, ty H)
        t = params['xfrac']
        g = _mm(g, _translate2d(-t[:, 0] * width, -t[:, 1] * height, n))
    return g


def color_matrix(params: dict, n: int, num_channels: int = 3):
    """C [N,4,4]: homogeneous colour_in -> colour_out, each op multiplied on the left in the official order.
    Hue and saturation are ignored for 1-channel images (official)."""
    v_outer = jnp.asarray(_LUMA_OUTER)
    eye = jnp.eye(4, dtype=jnp.float32)
    m = jnp.broadcast_to(eye, (n, 4, 4))
    if 'brightness' in params:                 # add b to every channel
        b = params['brightness']
        m = _mm(_translate3d(b, b, b, n), m)
    if 'contrast' in params:                   # multiply every channel by c (around 0)
        c = params['contrast']
        m = _mm(_scale3d(c, c, c, n), m)
    if 'lumaflip' in params:                   # Householder reflection I - 2 v v^T: negates the luma component
        i = params['lumaflip'][:, None, None]
        m = _mm(eye - 2 * v_outer * i, m)
    if num_channels > 1 and 'hue' in params:   # rotate around the luma axis
        m = _mm(_rotate3d(_LUMA, params['hue'], n), m)
    if num_channels > 1 and 'saturation' in params:  # scale the chroma (orthogonal to luma) by s
        s = params['saturation'][:, None, None]
        m = _mm(v_outer + (eye - v_outer) * s, m)
    return m

#----------------------------------------------------------------------------
# Execution.

def _static_margin(spec: AugmentSpec, height: int, width: int):
    """Reflect-padding margin (mx, my) in input pixels, a trace-time constant.

    Official: the four image corners are mapped through each sample's G_inv, the margin is the largest excursion
    beyond the image over the whole batch plus 2 * Hz_pad (the sample grid overhang and the filter support),
    clamped to [0, size - 1] (the most a reflection can supply), and the padded image's size follows. Under jit
    shapes must be static, so we pad by the largest margin the enabled ops can ask for. A larger margin never
    changes a value: the official margin already covers every source point the output reads (that is its
    purpose, and it is a batch maximum, so most samples have slack), and the padding only adds reflected pixels
    that nobody reads; where the official margin is clamped, ours is the same clamp. Only float rounding of the
    coordinates differs (the padded size enters the official grid normalisation).
      * scale, rotate, aniso, xfrac draw from unbounded distributions: the bound is the clamp, size - 1.
      * blitting only (xflip, rotate90, xint): corners stay within max(cx, cy) + ceil(xint_max * size) of the
        centre, so the margin is about xint_max * size + 2 * Hz_pad, much cheaper (the 'blit' preset).
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    if any(getattr(spec, k) > 0 for k in ('scale', 'rotate', 'aniso', 'xfrac')):
        return width - 1, height - 1
    reach = max(cx, cy) if spec.rotate90 > 0 else None
    shift = int(np.ceil(spec.xint_max * max(width, height))) + 1 if spec.xint > 0 else 0
    mx = (reach if reach is not None else cx) + shift + 2 * HZ_PAD - cx
    my = (reach if reach is not None else cy) + shift + 2 * HZ_PAD - cy
    return int(min(max(np.ceil(mx), 0), width - 1)), int(min(max(np.ceil(my), 0), height - 1))


def _bilinear_zeros(img, u, v):
    """torch grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False) for one image, in pixel
    coordinates: img [H,W,C]; u, v [h,w] with pixel centres at integers. Each of the 4 neighbours outside the
    image contributes zero. Gather-based, so the gradient w.r.t. img is a scatter-add."""
    h, w, c = img.shape
    # Clip far-away points first so the int cast cannot overflow; a point clipped to -2 or size + 1 still has
    # both neighbours outside, hence weight zero, as before clipping.
    u = jnp.clip(u, -2.0, w + 1.0)
    v = jnp.clip(v, -2.0, h + 1.0)
    x0f, y0f = jnp.floor(u), jnp.floor(v)
    fx, fy = u - x0f, v - y0f
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    flat = img.reshape(h * w, c)                               # [H*W, C]

    def tap(yi, xi, weight):
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
        return flat[idx] * jnp.where(inside, weight, 0.0).astype(img.dtype)[..., None]   # [h, w, C]

    return (tap(y0, x0, (1 - fx) * (1 - fy)) + tap(y0, x0 + 1, fx * (1 - fy)) +
            tap(y0 + 1, x0, (1 - fx) * fy) + tap(y0 + 1, x0 + 1, fx * fy))


def _resample(images, g_inv, margin):
    """The official single geometric pass, with a static margin (see _static_margin):
    reflect-pad -> 2x upsample (Hz_geom) -> bilinear sample on a grid of the output plus Hz_pad on every side at
    2x -> 2x downsample (Hz_geom flipped, cropping the overhang). Samples whose G_inv is exactly the identity are
    returned unchanged (the official pass returns them up to rounding, since sym6 is orthogonal)."""
    n, h, w, _ = images.shape
    mx, my = margin
    x = jnp.pad(images, ((0, 0), (my, my), (mx, mx), (0, 0)), mode='reflect')     # [N, H+2my, W+2mx, C]
    x = upsample2d(x, HZ_GEOM, up=2)                                     # [N, Hp, Wp, C]
    hp, wp = x.shape[1], x.shape[2]

    # G_inv in the upsampled frame: conjugate by the 2x scale, and by the half-pixel shift between the centred
    # coordinates of the two grids (official: scale2d(2) G scale2d_inv(2), then
    # translate2d(-.5) G translate2d_inv(-.5)).
    g = _mm(_scale2d(2, 2, n), _mm(g_inv, _scale2d(0.5, 0.5, n)))
    g = _mm(_translate2d(-0.5, -0.5, n), _mm(g, _translate2d(0.5, 0.5, n)))

    # The sample grid: the output plus Hz_pad input pixels on every side, at 2x (the official `shape`). affine_grid
    # + grid_sample (align_corners=False) reduce to: grid pixel j has centred coordinate j + 0.5 - size/2, G maps
    # it into the centred coordinates of the padded upsampled image, whose pixel index is that + size/2 - 0.5.
    hg, wg = (h + 2 * HZ_PAD) * 2, (w + 2 * HZ_PAD) * 2
    gx = jnp.arange(wg, dtype=jnp.float32) + (0.5 - wg / 2)
    gy = jnp.arange(hg, dtype=jnp.float32) + (0.5 - hg / 2)
    gxy = lambda r: g[:, r, 0, None, None] * gx[None, None, :] + g[:, r, 1, None, None] * gy[None, :, None] \
        + g[:, r, 2, None, None]
    u = gxy(0) + (wp / 2 - 0.5)                                                    # [N, hg, wg]
    v = gxy(1) + (hp / 2 - 0.5)
    x = jax.vmap(_bilinear_zeros)(x, u, v)                                         # [N, hg, wg, C]
    x = downsample2d(x, HZ_GEOM, down=2, padding=-HZ_PAD * 2, flip_filter=True)   # [N, H, W, C]

    identity = jnp.all(g_inv == jnp.eye(3, dtype=g_inv.dtype), axis=(1, 2))
    return jnp.where(identity[:, None, None, None], images, x.astype(images.dtype))


def _apply_color(images, m):
    """colour_out = C[:3,:3] colour_in + C[:3,3] per pixel (RGB); for 1 channel the official rule: the mean of
    the three RGB rows, i.e. x * sum(row[:3]) + row[3]. Written as explicit multiply-adds (no TF32 matmul).
    Samples with C exactly the identity pass unchanged (x + 0 would turn -0.0 into +0.0)."""
    n, h, w, c = images.shape
    m = m.astype(images.dtype)
    if c == 3:
        coef = m[:, None, None, :3, :]                                             # [N,1,1,3,4]
        x = (images[..., 0:1] * coef[..., 0] + images[..., 1:2] * coef[..., 1] +
             images[..., 2:3] * coef[..., 2]) + coef[..., 3]                        # [N,H,W,3]
    elif c == 1:
        row = jnp.mean(m[:, :3, :], axis=1)                                         # [N,4]
        x = images * jnp.sum(row[:, :3], axis=1)[:, None, None, None] + row[:, 3, None, None, None]
    else:
        raise ValueError(f'augment: colour ops need RGB (3 channels) or L (1 channel) images, got {c} channels')
    identity = jnp.all(m == jnp.eye(4, dtype=m.dtype), axis=(1, 2))
    return jnp.where(identity[:, None, None, None], images, x)


def _imgfilter(images, gains):
    """Per-sample filtering with g @ Hz_fbank, where g is the band gain vector: for each band i the gain vector
    (1, .., t_i, .., 1) is normalised to unit expected power (so the image keeps its overall power on a 1/f
    spectrum) and the normalised vectors are multiplied together (official). Reflect padding, then the symmetric
    43-tap filter along W, then along H. Samples where no band fired pass unchanged."""
    n, h, w, c = images.shape
    nb = HZ_FBANK.shape[0]
    power = jnp.asarray(_EXPECTED_POWER)
    g = jnp.ones((n, nb), jnp.float32)
    for i in range(nb):
        t = jnp.ones((n, nb), jnp.float32).at[:, i].set(gains[:, i])
        t = t / jnp.sqrt(jnp.sum(power * jnp.square(t), axis=-1, keepdims=True))
        g = g * t
    f = _mm(g, jnp.asarray(HZ_FBANK)).astype(images.dtype)                        # [N, taps]
    taps = f.shape[1]
    pad = taps // 2
    x = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
    x = sum(f[:, k, None, None, None] * lax.slice_in_dim(x, k, k + w, axis=2) for k in range(taps))
    x = sum(f[:, k, None, None, None] * lax.slice_in_dim(x, k, k + h, axis=1) for k in range(taps))
    fired = jnp.any(gains != 1, axis=1)
    return jnp.where(fired[:, None, None, None], x, images)


def apply_params(images, params: dict, spec) -> jax.Array:
    """Applies drawn (or hand-set) parameters: geometric pass, colour matrix, imgfilter, noise, cutout.
    Which stages exist is decided by `spec` (static); a stage's missing entries mean identity."""
    spec = make_spec(spec)
    _check_images(images)
    n, h, w, c = images.shape
    x = images
    if spec.has_geometric:
        x = _resample(x, geometric_matrix(params, n, h, w), _static_margin(spec, h, w))
    if spec.has_color:
        if c not in (1, 3):
            raise ValueError(f'augment: colour ops need RGB (3 channels) or L (1 channel) images, got {c} '
                             f'channels (disable brightness/contrast/lumaflip/hue/saturation in the spec)')
        x = _apply_color(x, color_matrix(params, n, c))
    if spec.imgfilter > 0 and 'imgfilter' in params:
        x = _imgfilter(x, params['imgfilter'])
    if spec.noise > 0 and 'noise' in params:
        sigma = params['noise'].astype(x.dtype)[:, None, None, None]
        noisy = x + jax.random.normal(params['noise_key'], x.shape, x.dtype) * sigma
        x = jnp.where(sigma > 0, noisy, x)
    if spec.cutout > 0 and 'cutout_size' in params:
        size = params['cutout_size'][:, None, None]                                # [N,1,1]
        center = params['cutout_center']
        cx = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        cy = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        keep_x = jnp.abs(cx[None, None, :] - center[:, 0, None, None]) >= size / 2  # [N,1,W]
        keep_y = jnp.abs(cy[None, :, None] - center[:, 1, None, None]) >= size / 2  # [N,H,1]
        x = x * (keep_x | keep_y).astype(x.dtype)[..., None]
    return x


def _check_images(images):
    if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f'augment: images must be a float [N, H, W, C] (NHWC) array, got {images.dtype} '
                         f'{tuple(images.shape)}')


def augment(
    images,                 # [N, H, W, C] float, NHWC, roughly [-1, 1]; C = 1 or 3 when colour ops are enabled.
    key,                    # jax.random key: the draws of this call.
    p,                      # Overall augmentation probability, a float scalar; may be traced (no recompiles).
    spec=DEFAULT_PRESET,    # AugmentSpec, preset name ('bgc' default) or AugmentPipe kwargs; static.
) -> jax.Array:
    """The official AugmentPipe forward: same shape and dtype, each op fired per sample with probability
    p * multiplier. p = 0 returns `images` bit for bit. Differentiable w.r.t. images (for G's loss and R1)."""
    _check_images(images)
    spec = make_spec(spec)
    return apply_params(images, sample_params(key, p, spec, images.shape), spec)

#----------------------------------------------------------------------------
# Adaptive p (official training_loop.py, "Execute ADA heuristic").

def ada_stats_init():
    """The accumulator of the overfitting heuristic r_t = E[sign(D(x_real))]: a sum and a count (float32, so
    they live in the train state as plain scalars and all-reduce as a global-batch sum under jit)."""
    return {'sign_sum': jnp.float32(0), 'count': jnp.float32(0)}


def ada_accumulate(stats, real_logits):
    """Adds one minibatch of D's logits on real images. Officially every D pass over reals reports its signs
    ('Loss/signs/real'), i.e. both Dmain and Dreg (R1) phases, summed over all GPUs."""
    s = jnp.sign(real_logits.astype(jnp.float32))
    return {'sign_sum': stats['sign_sum'] + jnp.sum(s), 'count': stats['count'] + s.size}


def ada_update(p, sign_sum, count, *, target: float = 0.6, batch_size: int, interval: int = 4,
               ada_kimg: float = 500):
    """New p after `interval` minibatches (official: run when batch_idx % ada_interval == 0, then reset stats):

        p <- max(p + sign(r_t - target) * batch_size * interval / (ada_kimg * 1000), 0)

    with r_t = sign_sum / count. So p moves by at most one unit per ada_kimg thousand real images. There is no
    upper clamp, exactly as officially (p > 1 only makes every op with multiplier 1 always fire). batch_size is
    the total (all-device) batch size. With count == 0 (nothing accumulated) p is returned unchanged, where the
    official collector's mean would be NaN."""
    p = jnp.asarray(p, jnp.float32)
    r_t = jnp.asarray(sign_sum, jnp.float32) / jnp.maximum(jnp.asarray(count, jnp.float32), 1)
    adjust = jnp.sign(r_t - target) * (batch_size * interval) / (ada_kimg * 1000)
    return jnp.where(jnp.asarray(count) > 0, jnp.maximum(p + adjust, 0), p)

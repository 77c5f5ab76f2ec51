"""Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2/3.

Layout: every image tensor here is NHWC (channels last). Filters follow the official convention: a 2-D filter is
`[fh, fw]` (rows = height), a 1-D filter `[taps]` is separable and applied along W, then along H.

Implementations with identical semantics:
  * `impl='ref'`:  zero-insertion, pad, a full-rate depthwise convolution, then subsampling. Easy to read and the
                   direct translation of the official `_upfirdn2d_ref`.
  * `impl='fast'`: polyphase. Upsampling never materialises the zeros: output phase q of an up-x FIR only meets
                   every `up`-th tap, so it is a short FIR on the input grid; downsampling only evaluates the kept
                   outputs (strided windows). Separable filters become two passes (W, then H), each a sum of
                   shifted slices that XLA fuses into one loop; on CPU the H pass reads the W pass's output from
                   memory (`_after_materialising`), where XLA would otherwise fuse the two passes and run the
                   first once per tap of the second. For a non-separable (radial, StyleGAN3-R) filter the fast
                   path is a sum of 144 shifted slices (12x12 taps), and lowered for a TPU
                   (`lax.platform_dependent`, so a CPU host planning a TPU job gets the TPU program) it becomes
                   one depthwise convolution with `lhs_dilation = up` and `window_strides = down`: the TPU
                   compiler keeps many of the slices live at once, several times the StyleGAN3-R G's temporary
                   memory. Separable filters keep the slices on TPU too (as convolutions they needed more memory
                   there). On CPU and GPU every filter keeps them (on CPU a radial filter's slices were faster
                   than a convolution; on GPU every filter as convolutions was slower, and the radial ones alone
                   gave a small gain in one measurement, not taken).
  * `impl='conv'`: every filter as such depthwise convolutions (a 1-D filter as one per axis), on any platform.
Measurements: benchmarks/ops_notes.md.
"""

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IntOrPair = Union[int, Sequence[int]]

#----------------------------------------------------------------------------
# Argument parsing (official conventions).

def _parse_scaling(s: IntOrPair):
    """int or [x, y] -> (sx, sy)."""
    if isinstance(s, (int, np.integer)):
        s = [int(s), int(s)]
    sx, sy = (int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f'up/down factors must be >= 1, got {s}')
    return sx, sy


def _parse_padding(p: IntOrPair):
    """int, [x, y] or [x0, x1, y0, y1] -> (px0, px1, py0, py1)."""
    if isinstance(p, (int, np.integer)):
        p = [int(p), int(p)]
    p = [int(v) for v in p]
    if len(p) == 2:
        px, py = p
        p = [px, px, py, py]
    if len(p) != 4:
        raise ValueError(f'padding must be an int, [x, y] or [x0, x1, y0, y1], got {p}')
    return tuple(p)


def filter_size(f) -> tuple:
    """(fw, fh) of a filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    f = np.asarray(f) if not isinstance(f, jax.Array) else f
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    if f.ndim == 2:
        return f.shape[1], f.shape[0]
    raise ValueError(f'filter must be 1-D or 2-D, got shape {f.shape}')

#----------------------------------------------------------------------------

def setup_filter(f, normalize: bool = True, flip_filter: bool = False, gain: float = 1,
                 separable: Optional[bool] = None) -> np.ndarray:
    """Prepares a low-pass filter exactly as the official `upfirdn2d.setup_filter`.

    None -> [[1]]. A 1-D filter with fewer than 8 taps becomes the 2-D outer product unless `separable=True`
    (a 2-D filter cannot be made separable). Then: `f /= f.sum()` if `normalize`, flip all axes if `flip_filter`,
    and multiply by `gain ** (f.ndim / 2)` so a separable filter carries sqrt(gain) per pass.
    Returns float32 numpy: filters depend only on the config, so they are constants, not parameters.
    """
    if f is None:
        f = 1
    f = np.asarray(f, dtype=np.float32)
    if f.ndim == 0:
        f = f[np.newaxis]
    if f.ndim not in (1, 2) or f.size == 0:
        raise ValueError(f'filter must be a non-empty 1-D or 2-D array, got shape {f.shape}')
    if separable is None:
        separable = (f.ndim == 1 and f.size >= 8)
    if f.ndim == 1 and not separable:
        f = np.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f'a {f.ndim}-D filter cannot be separable={separable}')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f[(slice(None, None, -1),) * f.ndim]
    f = f * np.float32(gain) ** np.float32(f.ndim / 2)
    return np.ascontiguousarray(f, dtype=np.float32)

#----------------------------------------------------------------------------
# Reference implementation.

def _depthwise_conv(x, f2d, strides=(1, 1)):
    """Valid correlation of every channel of NHWC `x` with the 2-D kernel `f2d` [kh, kw]."""
    c = x.shape[-1]
    kernel = jnp.broadcast_to(f2d.astype(x.dtype)[:, :, None, None], (*f2d.shape, 1, c))  # [kh,kw,1,C]
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding='VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c,
        precision=lax.Precision.HIGHEST)


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain):
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    # Zero-insertion upsampling (each sample followed by up-1 zeros) and pad/crop, as a single lax.pad: interior
    # padding inserts the zeros, the extra `up-1` at the high end restores the official trailing zeros, and
    # negative edge padding crops.
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0), (py0, py1 + upy - 1, upy - 1), (px0, px1 + upx - 1, upx - 1), (0, 0, 0)])
    if f is None:
        if gain != 1:
            x = x * gain
    else:
        f = jnp.asarray(f, jnp.float32) * jnp.float32(gain) ** jnp.float32(f.ndim / 2)
        # Official semantics: flip_filter=False is a true convolution, i.e. correlation with the flipped filter.
        if not flip_filter:
            f = jnp.flip(f)
        if f.ndim == 2:
            x = _depthwise_conv(x, f)
        else:
            x = _depthwise_conv(x, f[None, :])  # along W first,
            x = _depthwise_conv(x, f[:, None])  # then along H, as the official code.
    return x[:, ::downy, ::downx, :]

#----------------------------------------------------------------------------
# Fast (polyphase) implementation.

def _fir_1d(x, g, axis, up, down, p0, p1):
    """One separable pass along `axis`: zero-insert by `up`, pad (p0, p1), correlate with `g`, keep every `down`.

    `g` is a numpy float32 array (already flipped and gain-scaled), so its taps are trace-time constants. The output
    at (upsampled) position i is sum_k u[i + k] g[k] where u[m] = x[(m - p0) / up] when that is an integer in
    range. Output phase q = i mod up therefore only meets taps k = (p0 - q) mod up (+ multiples of up), which read
    x at offsets (q + k - p0) / up: a short FIR on the input grid.
    """
    n_in = x.shape[axis]
    taps = g.shape[0]
    n_up = n_in * up + p0 + p1                # padded upsampled length
    n_full = n_up - taps + 1                  # valid correlation length
    if n_full <= 0:
        raise ValueError('upfirdn2d: filter is larger than the padded input')
    n_out = (n_full - 1) // down + 1          # after subsampling

    if up == 1:
        # Plain (possibly strided) FIR: pad/crop once, then sum strided slices.
        lo, hi = p0, p1
        x = _pad_axis(x, axis, lo, hi)
        acc = None
        for k in range(taps):
            if g[k] == 0:
                continue
            term = _f32(lax.slice_in_dim(x, k, k + (n_out - 1) * down + 1, down, axis)) * float(g[k])
            acc = term if acc is None else acc + term
        return acc.astype(x.dtype) if acc is not None else jnp.zeros(_shape_with(x, axis, n_out), x.dtype)

    # Polyphase upsampling (down is applied afterwards by a strided slice; SG3 never combines up>1 and down>1 in
    # one pass, since the nonlinearity sits between them, so this stays simple).
    n_phase = -(-n_full // up)                # outputs per phase (the last phase may be one shorter)
    phases = []
    # x is read at index j = (i + k - p0) / up. Collect all offsets first to pad once.
    reads = []
    for q in range(up):
        terms = []
        for k in range(taps):
            if (q + k - p0) % up != 0 or g[k] == 0:
                continue
            terms.append(((q + k - p0) // up, float(g[k])))
        reads.append(terms)
    offsets = [o for terms in reads for o, _ in terms] or [0]
    lo = max(0, -min(offsets))
    hi = max(0, max(offsets) + n_phase - n_in)
    xp = _pad_axis(x, axis, lo, hi)
    for q in range(up):
        acc = None
        for off, gk in reads[q]:
            term = _f32(lax.slice_in_dim(xp, off + lo, off + lo + n_phase, 1, axis)) * gk
            acc = term if acc is None else acc + term
        if acc is None:
            acc = jnp.zeros(_shape_with(x, axis, n_phase), x.dtype)
        phases.append(acc.astype(x.dtype))
    y = jnp.stack(phases, axis=axis + 1)      # [..., n_phase, up, ...]
    shape = list(x.shape)
    shape[axis] = n_phase * up
    y = y.reshape(shape)
    y = lax.slice_in_dim(y, 0, n_full, 1, axis)
    if down > 1:
        y = lax.slice_in_dim(y, 0, (n_out - 1) * down + 1, down, axis)
    return y


def _f32(x):
    # Taps are summed in float32 whatever the storage dtype (bf16/fp16 layers of mixed precision), as the official
    # CUDA kernels accumulate in float32; XLA fuses the casts into the sum, so this costs no memory traffic.
    return x.astype(jnp.float32)


def _shape_with(x, axis, n):
    s = list(x.shape)
    s[axis] = n
    return tuple(s)


def _pad_axis(x, axis, lo, hi):
    if lo == 0 and hi == 0:
        return x
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _separable_factors(f2d):
    """(fy, fx) with f2d == outer(fy, fx) up to float32 rounding, or None if `f2d` is not rank one.

    The official 1-D filters with < 8 taps (e.g. [1,3,3,1]) become 2-D outer products in `setup_filter`; running
    them as two 1-D passes is the same sum with fewer multiplies."""
    u, s, vt = np.linalg.svd(f2d.astype(np.float64))
    fy, fx = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
    if np.max(np.abs(np.outer(fy, fx) - f2d)) > 1e-7 * np.max(np.abs(f2d)):
        return None
    return fy.astype(np.float32), fx.astype(np.float32)


def _fir_2d_strided(x, g, down_y, down_x):
    """Valid correlation of NHWC `x` with the constant 2-D kernel `g` [kh, kw], evaluated every `down` samples."""
    n, h, w, c = x.shape
    kh, kw = g.shape
    ho, wo = (h - kh) // down_y + 1, (w - kw) // down_x + 1
    if ho <= 0 or wo <= 0:
        raise ValueError('upfirdn2d: filter is larger than the padded input')
    acc = None
    for i in range(kh):
        for j in range(kw):
            if g[i, j] == 0:
                continue
            term = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * down_y + 1, j + (wo - 1) * down_x + 1, c),
                             (1, down_y, down_x, 1))
            term = _f32(term) * float(g[i, j])
            acc = term if acc is None else acc + term
    return acc.astype(x.dtype) if acc is not None else jnp.zeros((n, ho, wo, c), x.dtype)


def _upfirdn2d_fast(x, f, up, down, padding, flip_filter, gain):
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    if f is None:
        gy = gx = np.ones([1], np.float32) * np.float32(gain) ** np.float32(0.5)
    elif f.ndim == 1:
        gy = gx = f * np.float32(gain) ** np.float32(0.5)
    else:
        factors = _separable_factors(f)
        if factors is None:
            # Non-separable (radial) filter: zero-insert if upsampling (SG3 radial filters only downsample, so
            # this is rare), then a sum of strided, shifted slices that evaluates only the kept outputs. On CPU
            # this fused loop is faster than a depthwise (feature-grouped) convolution (benchmarks/ops_notes.md).
            f = f * np.float32(gain)
            if not flip_filter:
                f = f[::-1, ::-1]
            zero = jnp.zeros((), x.dtype)
            x = lax.pad(x, zero, [(0, 0, 0), (py0, py1 + upy - 1, upy - 1), (px0, px1 + upx - 1, upx - 1),
                                  (0, 0, 0)])
            return _fir_2d_strided(x, f, downy, downx)
        gy, gx = (g * np.float32(gain) ** np.float32(0.5) for g in factors)
    if not flip_filter:
        gy, gx = gy[::-1], gx[::-1]
    x = _fir_1d(x, np.ascontiguousarray(gx), axis=2, up=upx, down=downx, p0=px0, p1=px1)
    h_pass = lambda x: _fir_1d(x, np.ascontiguousarray(gy), axis=1, up=upy, down=downy, p0=py0, p1=py1)
    if len(gx) > 1 and len(gy) > 1:
        return lax.platform_dependent(x, cpu=lambda x: _after_materialising(h_pass, x), default=h_pass)
    return h_pass(x)


def _after_materialising(fn, x):
    """fn(x), with x written to memory first. XLA:CPU fuses the H pass of a separable filter into the W pass
    before it, and a loop fusion evaluates a producer once per read, so each output then runs the W pass once per
    H tap (144 multiply-adds for 12-tap filters instead of 24; benchmarks/ops_notes.md). A conditional is a fusion
    boundary: its operand is materialised. Both branches are `fn`, so whichever the predicate (that x's first
    value is not NaN, which the compiler cannot know) picks, the result is fn(x)."""
    first = x[(0,) * x.ndim]
    return lax.cond(first == first, fn, fn, x)

def _upfirdn2d_fast_with_vjp(x, f, up, down, padding, flip_filter, gain):
    """The fast path with its adjoint as the gradient: upfirdn2d is linear in x, and its transpose is another
    upfirdn2d with up and down swapped, the filter flipped and the padding mirrored (as the official CUDA op's
    backward). Left to autodiff, the transpose of the shifted slices becomes one padded full-size array per tap,
    several times slower than the forward (benchmarks/ops_notes.md); this keeps the backward as cheap as the
    forward, and since the backward is itself differentiable the R1 penalty's double backward takes the same fast
    path."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    fw, fh = filter_size(f)
    _, in_h, in_w, _ = x.shape

    @jax.custom_vjp
    def fn(x):
        return _upfirdn2d_fast(x, f, up, down, padding, flip_filter, gain)

    def fwd(x):
        return fn(x), None

    def bwd(_, dy):
        out_h, out_w = dy.shape[1], dy.shape[2]
        p = [fw - px0 - 1, in_w * upx - out_w * downx + px0 - upx + 1,
             fh - py0 - 1, in_h * upy - out_h * downy + py0 - upy + 1]
        dx = _upfirdn2d_fast_with_vjp(dy, f, down, up, p, not flip_filter, gain)
        return (dx,)

    fn.defvjp(fwd, bwd)
    return fn(x)

#----------------------------------------------------------------------------
# TPU implementation: the fast path's arithmetic as depthwise convolutions.

def _fir_conv(x, g, up, down, pad):
    """Depthwise valid correlation of NHWC `x` with the constant 2-D kernel `g` [kh, kw] on the upsampled, padded
    grid: `lhs_dilation` inserts the up-1 zeros between samples without materialising them, `window_strides`
    evaluates only the kept outputs. `pad` is ((y0, y1), (x0, x1)) on the upsampled grid, non-negative."""
    c = x.shape[-1]
    kernel = jnp.broadcast_to(jnp.asarray(g, jnp.float32)[:, :, None, None], (*g.shape, 1, c))
    # Summed in float32 whatever the storage dtype, as the fast path and the official kernels.
    y = lax.conv_general_dilated(
        _f32(x), kernel, window_strides=down, padding=pad, lhs_dilation=up,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c, precision=lax.Precision.HIGHEST)
    return y.astype(x.dtype)


def _crop_input(x, axis, up, lo, hi):
    """Where up == 1 the upsampled grid is the input grid: apply a negative (cropping) padding to the input and
    return what is left to pad. Negative padding with up > 1 is never produced by the networks and is refused
    here; `_upfirdn2d_conv`'s caller keeps the polyphase path for it."""
    assert up == 1 or min(lo, hi) >= 0
    if up == 1 and min(lo, hi) < 0:
        x = _pad_axis(x, axis, min(lo, 0), min(hi, 0))
        lo, hi = max(lo, 0), max(hi, 0)
    return x, lo, hi


def _upfirdn2d_conv(x, f, up, down, padding, flip_filter, gain):
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    if (upx > 1 and min(px0, px1) < 0) or (upy > 1 and min(py0, py1) < 0):
        return _upfirdn2d_fast_with_vjp(x, f, up, down, padding, flip_filter, gain)
    # The official trailing zeros after the last sample (as `_upfirdn2d_ref`) are padding here.
    x, px0, px1 = _crop_input(x, 2, upx, px0, px1 + upx - 1)
    x, py0, py1 = _crop_input(x, 1, upy, py0, py1 + upy - 1)
    if f is None:
        f = np.ones([1], np.float32)
    f = f * np.float32(gain) ** np.float32(f.ndim / 2)
    if not flip_filter:
        f = f[(slice(None, None, -1),) * f.ndim]
    if f.ndim == 2:
        return _fir_conv(x, f, (upy, upx), (downy, downx), ((py0, py1), (px0, px1)))
    x = _fir_conv(x, f[None, :], (1, upx), (1, downx), ((0, 0), (px0, px1)))   # along W first,
    return _fir_conv(x, f[:, None], (upy, 1), (downy, 1), ((py0, py1), (0, 0)))  # then along H.

#----------------------------------------------------------------------------

def upfirdn2d(
    x,                      # Input: [batch, height, width, channels] (NHWC).
    f,                      # Filter: [fh, fw] non-separable, [taps] separable, or None (1x1 identity).
    up: IntOrPair = 1,      # Upsampling factor: int or [x, y].
    down: IntOrPair = 1,    # Downsampling factor: int or [x, y].
    padding: IntOrPair = 0, # Padding of the *upsampled* image: int, [x, y] or [x0, x1, y0, y1]; negative crops.
    flip_filter: bool = False,  # False = convolution (official default), True = correlation.
    gain: float = 1,        # Overall scaling; the filter is multiplied by gain ** (f.ndim / 2).
    impl: str = 'fast',     # 'fast' (polyphase; radial filters as convolutions on TPU), 'conv' (every filter
                            # as convolutions) or 'ref' (explicit zero-insertion); identical semantics.
):
    """Pad, upsample, filter and downsample a batch of 2-D images (the official `upfirdn2d`).

    Exact steps, per channel: (1) upsample by inserting `up-1` zeros after every sample; (2) pad with zeros, or
    crop where the padding is negative; (3) convolve with `f` over the valid region (true convolution unless
    `flip_filter`; a 1-D filter is applied along W, then along H); (4) keep every `down`-th sample starting at 0.
    The filter is scaled by `gain ** (f.ndim / 2)`.
    Output size per axis: (in * up + p0 + p1 - taps) // down + 1.
    """
    if x.ndim != 4:
        raise ValueError(f'upfirdn2d expects NHWC input, got shape {x.shape}')
    up, down, padding = _parse_scaling(up), _parse_scaling(down), _parse_padding(padding)
    if f is not None and not isinstance(f, jax.core.Tracer):
        f = np.asarray(f, np.float32)
    if impl == 'ref':
        return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    if impl == 'fast':
        if isinstance(f, jax.core.Tracer):
            return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)  # traced filter: no constant taps
        fast = lambda x: _upfirdn2d_fast_with_vjp(x, f, up, down, padding, flip_filter, gain)
        if f is None or f.ndim == 1 or _separable_factors(f) is not None:
            return fast(x)
        # A non-separable (radial) filter: convolutions on TPU, the slice sums elsewhere (module docstring).
        return lax.platform_dependent(
            x, tpu=lambda x: _upfirdn2d_conv(x, f, up, down, padding, flip_filter, gain), default=fast)
    if impl == 'conv':      # every filter as depthwise convolutions, on any platform (tests, benchmarks)
        if isinstance(f, jax.core.Tracer):
            return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
        return _upfirdn2d_conv(x, f, up, down, padding, flip_filter, gain)
    raise ValueError(f"impl must be 'fast', 'conv' or 'ref', got {impl!r}")

#----------------------------------------------------------------------------
# Official convenience wrappers.

def filter2d(x, f, padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1, impl: str = 'fast'):
    """Filter without changing the size: pads [fw//2 + px0, (fw-1)//2 + px1, fh//2 + py0, (fh-1)//2 + py1]."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up: IntOrPair = 2, padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1,
               impl: str = 'fast'):
    """Upsample by `up` with filter `f`, output size in * up; gain is multiplied by upx * upy."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down: IntOrPair = 2, padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1,
                 impl: str = 'fast'):
    """Downsample by `down` with filter `f`, output size in // down."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

"""Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3 (paper Section 3.2, Figure 4).

Two backward passes with the same numbers:
  * `impl='ref'`: automatic differentiation of the composition bias -> upfirdn2d -> bias_act -> upfirdn2d (the
    readable reference). Autodiff keeps what the leaky ReLU and the clamp need at the upsampled rate.
  * `impl='fast'` / `'conv'` (the official CUDA kernel's scheme): a `jax.custom_vjp` whose forward saves only two
    bits per upsampled value, packed four to a byte (bit 0: the value was negative, so its gradient is multiplied
    by `slope`; bit 1: it was clamped, so its gradient is 0), and whose backward is the adjoint down-FIR, that
    mask, and the adjoint up-FIR. Nothing upsampled in float is kept for the backward pass. The backward is made
    of differentiable ops, so a gradient of a gradient (R1-like penalties, path length through G) works: the mask
    is piecewise constant, its derivative zero, as the reference's. The packed mask is named `MASK_NAME`
    (`jax.ad_checkpoint.checkpoint_name`), so a `jax.checkpoint` policy can keep it.
"""

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from sg3jax.ops.bias_act import bias_act
from sg3jax.ops.upfirdn2d import _parse_padding, _parse_scaling, upfirdn2d

_NEGATIVE, _CLAMPED = 1, 2      # the mask's bits
# The packed mask's name for `jax.checkpoint` policies: a rematerialised layer that saves it backpropagates
# through this op without running its forward again (synthesis_sg3.REMAT_POLICIES).
MASK_NAME = 'filtered_lrelu_mask'


def filtered_lrelu(
    x,                          # Input: [batch, height, width, channels] (NHWC).
    fu=None,                    # Upsampling filter [taps] or [fh, fw]; None = identity.
    fd=None,                    # Downsampling filter [taps] or [fh, fw]; None = identity.
    b=None,                     # Bias [channels]; None = no bias.
    up: int = 1,                # Upsampling factor.
    down: int = 1,              # Downsampling factor.
    padding: Union[int, Sequence[int]] = 0,  # Padding of the upsampled image: int, [x, y] or [x0, x1, y0, y1].
    gain: float = np.sqrt(2),   # Scale after the leaky ReLU.
    slope: float = 0.2,         # Leaky ReLU slope.
    clamp: Optional[float] = None,  # Clamp after the gain to [-clamp, +clamp]; None = no clamping.
    flip_filter: bool = False,  # False = convolution, True = correlation.
    impl: str = 'fast',         # 'fast' or 'conv' (upfirdn2d's, with the sign-mask backward) or 'ref'.
):
    """bias -> upsample -> FIR -> gain -> leaky ReLU -> clamp -> FIR -> downsample (official `filtered_lrelu`).

    Exact steps: (1) add `b` along channels; (2) upsample by zero-insertion by `up`; (3) pad/crop by `padding`;
    (4) convolve with `fu`, scaled so the upsampling keeps the signal's magnitude (`gain = up**2` in upfirdn2d
    terms, i.e. `up` per separable pass); (5) multiply by `gain`, leaky ReLU with `slope` (gain applied after the
    activation, as the official ref); (6) clamp to [-clamp, clamp]; (7) convolve with `fd` (valid, no padding);
    (8) keep every `down`-th sample. The nonlinearity runs at the temporary (upsampled) rate, which is what bounds
    the aliasing it creates (Appendix D of the paper). The backward pass: see the module docstring.
    """
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    if upx != upy or downx != downy:
        raise ValueError('filtered_lrelu supports only isotropic up/down factors')
    if impl not in ('fast', 'conv', 'ref'):
        raise ValueError(f"impl must be 'fast', 'conv' or 'ref', got {impl!r}")
    padding = tuple(_parse_padding(padding))
    gain, slope = float(gain), float(slope)
    clamp = None if clamp is None else float(clamp)
    up_fir = lambda t: upfirdn2d(t, fu, up=upx, padding=padding, gain=upx ** 2, flip_filter=flip_filter, impl=impl)
    down_fir = lambda t: upfirdn2d(t, fd, down=downx, flip_filter=flip_filter, impl=impl)
    if impl == 'ref':
        x = bias_act(x, b, dim=-1)
        x = bias_act(up_fir(x), act='lrelu', alpha=slope, gain=gain, clamp=clamp)
        return down_fir(x)
    return _with_mask_backward(up_fir, down_fir, gain, slope, clamp, x, b)


def _pack(mask):
    """uint8 [..., C] of 2-bit values -> uint8 [..., ceil(C / 4)], four values to a byte along the channels."""
    c = mask.shape[-1]
    mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, -c % 4)])
    quads = mask.reshape(*mask.shape[:-1], -1, 4)
    return quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)


def _unpack(packed, c):
    """The inverse of `_pack` for `c` channels."""
    quads = jnp.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=-1)
    return quads.reshape(*packed.shape[:-1], -1)[..., :c]


def _with_mask_backward(up_fir, down_fir, gain, slope, clamp, x, b):
    """filtered_lrelu of (x, b) with the official kernel's backward (module docstring). `up_fir` and `down_fir`
    are the two linear resampling passes; their adjoints come from jax.vjp, whose forward evaluation the compiler
    drops as unused (the passes are upfirdn2d's own custom adjoints, or convolutions)."""
    x_like = jax.ShapeDtypeStruct(x.shape, x.dtype)
    u_like = jax.eval_shape(up_fir, x_like)

    def forward(x, b):
        u = up_fir(bias_act(x, b, dim=-1))
        y = bias_act(u, act='lrelu', alpha=slope, gain=gain)        # bias_act's arithmetic, its clamp below
        mask = jnp.where(u < 0, _NEGATIVE, 0).astype(jnp.uint8)
        if clamp is not None:
            mask = mask | jnp.where(jnp.abs(y) > clamp, _CLAMPED, 0).astype(jnp.uint8)
            y = jnp.clip(y, -clamp, clamp)
        return down_fir(y), checkpoint_name(_pack(mask), MASK_NAME)

    @jax.custom_vjp
    def fn(x, b):
        return forward(x, b)[0]

    def bwd(packed, dz):
        _, down_vjp = jax.vjp(down_fir, jnp.zeros(u_like.shape, u_like.dtype))
        (dy,) = down_vjp(dz)
        mask = _unpack(packed, u_like.shape[-1])
        scale = jnp.where(mask & _NEGATIVE, slope * gain, gain)
        if clamp is not None:
            scale = jnp.where(mask & _CLAMPED, 0.0, scale)
        du = dy * scale.astype(dy.dtype)
        _, up_vjp = jax.vjp(up_fir, jnp.zeros(x_like.shape, x_like.dtype))
        (dx,) = up_vjp(du)
        if b is None:
            return dx, None
        # The bias gradient sums over batch and pixels in float32 (as bias_act's broadcast_like arranges).
        return dx, jnp.sum(dx.astype(jnp.float32), axis=(0, 1, 2)).astype(b.dtype)

    fn.defvjp(forward, bwd)
    return fn(x, b)

"""Modulated convolutions of StyleGAN2 (weight demodulation, Section 2.2 of Karras et al. 2020) and StyleGAN3.

Both come in two mathematically identical forms:
  * fused:     build per-sample weights w[n] = w * s[n] (* demodulation) and run one grouped convolution with the
               batch as groups. This is what the official code does (SG3 always, SG2 by default).
  * non-fused: scale the activations by the style, convolve with the *shared* weight, scale the output by the
               demodulation coefficients. One dense convolution instead of N small ones: much faster on XLA.
They differ only by float rounding (the products are associated differently).

Layout: x is NHWC, weights are in the official [O, I, kh, kw] layout, styles [N, I].
"""

from typing import Optional

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from sg3jax.ops.bias_act import broadcast_like
from sg3jax.ops.conv2d_resample import conv2d, conv2d_resample

CONV_NAME = 'modulated_conv'  # the dense form's convolution output, before demodulation


def _grouped_per_sample(x, wmod, conv):
    """Runs `conv(x1, w1, groups)` with the batch folded into channels. wmod: [N, O, I, kh, kw]."""
    n, h, w_, i = x.shape
    _, o, _, kh, kw = wmod.shape
    x1 = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w_, n * i)      # [1,H,W,N*I]
    w1 = wmod.reshape(n * o, i, kh, kw)                                # [N*O,I,kh,kw]
    y = conv(x1, w1, n)                                                # [1,H',W',N*O]
    _, h2, w2, _ = y.shape
    return jnp.transpose(y.reshape(h2, w2, n, o), (2, 0, 1, 3))       # [N,H',W',O]


def modulated_conv2d(
    x,                          # Input [N, H, W, I] (NHWC).
    w,                          # Weight [O, I, kh, kw].
    s,                          # Styles [N, I].
    demodulate: bool = True,    # Apply weight demodulation?
    padding=0,                  # int or [padH, padW] (torch conv2d convention), symmetric.
    input_gain: Optional[jnp.ndarray] = None,  # Input channel scale: [], [I] or [N, I]; None = 1.
    fused: bool = True,         # Grouped per-sample conv (official) or the equivalent dense form.
):
    """StyleGAN3 modulated convolution (official `networks_stylegan3.modulated_conv2d`).

    With `demodulate`: w is first normalised by its RMS over [I, kh, kw] and s by its RMS over the *whole batch*
    (one scalar for all samples, as the official code: under a sharded global batch this scalar is global).
    Then w'[n] = w * s[n]; demodulated by rsqrt(sum_{i,k} w'[n]^2 + 1e-8); then multiplied by input_gain
    (after demodulation, so input_gain is not normalised away); then a correlation with the given padding.
    """
    n, _, _, i = x.shape
    o, wi, kh, kw = w.shape
    if wi != i or s.shape != (n, i):
        raise ValueError(f'modulated_conv2d: x {x.shape}, w {w.shape}, s {s.shape} do not agree')
    if isinstance(padding, int):
        padding = [padding, padding]
    ph, pw = padding
    pad = [pw, pw, ph, ph]

    if demodulate:
        w = w * lax.rsqrt(jnp.mean(jnp.square(w), axis=(1, 2, 3), keepdims=True))
        s = s * lax.rsqrt(jnp.mean(jnp.square(s)))
    gain = None
    if input_gain is not None:
        gain = jnp.broadcast_to(input_gain, (n, i))                   # [N,I]

    if fused:
        wmod = w[None] * s[:, None, :, None, None]                    # [N,O,I,kh,kw]
        if demodulate:
            dcoefs = lax.rsqrt(jnp.sum(jnp.square(wmod), axis=(2, 3, 4)) + 1e-8)  # [N,O]
            wmod = wmod * dcoefs[:, :, None, None, None]
        if gain is not None:
            wmod = wmod * gain[:, None, :, None, None]
        return _grouped_per_sample(x, wmod, lambda x1, w1, g: conv2d(x1, w1, padding=pad, groups=g))

    xs = s if gain is None else s * gain
    # Named for `jax.checkpoint` policies: the demodulation's gradient needs this output, so a rematerialised
    # layer that keeps it does not run the convolution again (synthesis_sg3.REMAT_POLICIES).
    y = checkpoint_name(conv2d(x * broadcast_like(xs[:, None, None, :], x), w, padding=pad), CONV_NAME)
    if demodulate:
        # sum_{i,k} (w[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 * sum_k w[o,i,k]^2
        dcoefs = lax.rsqrt(jnp.square(s) @ jnp.sum(jnp.square(w), axis=(2, 3)).T + 1e-8)  # [N,O]
        y = y * broadcast_like(dcoefs[:, None, None, :], y)
    return y


def modulated_conv2d_sg2(
    x,                          # Input [N, H, W, I] (NHWC).
    weight,                     # Weight [O, I, kh, kw].
    styles,                     # Modulation coefficients [N, I].
    noise=None,                 # Optional noise added to the output, broadcastable to [N, H', W', O].
    up: int = 1,                # Integer upsampling factor.
    down: int = 1,              # Integer downsampling factor.
    padding=0,                  # Padding w.r.t. the upsampled image.
    resample_filter=None,       # Low-pass filter (from setup_filter) for resampling.
    demodulate: bool = True,    # Apply weight demodulation?
    flip_weight: bool = True,   # False = convolution, True = correlation (torch conv2d).
    fused_modconv: bool = True, # Fused grouped conv (official default) or scale-activations form.
    impl: str = 'fast',
):
    """StyleGAN2 modulated convolution (official `networks_stylegan2.modulated_conv2d`, float32 path).

    Unlike SG3 there is no weight/style pre-normalisation in float32. Demodulation coefficients are
    rsqrt(sum_{i,k} (w * s[n])^2 + 1e-8). Non-fused: x * s -> conv_resample(w) -> * dcoefs (+ noise); fused: one
    grouped conv with per-sample weights, then + noise.
    """
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    if x.shape[-1] != i or styles.shape != (n, i):
        raise ValueError(f'modulated_conv2d_sg2: x {x.shape}, weight {weight.shape}, styles {styles.shape}')
    conv = lambda x1, w1, g: conv2d_resample(x1, w1, f=resample_filter, up=up, down=down, padding=padding,
                                             groups=g, flip_weight=flip_weight, impl=impl)
    if x.dtype == jnp.float16 and demodulate:
        # Official fp16 guard: pre-scale weight and styles by their max-norms so the products cannot overflow
        # float16. Demodulation divides both scales out again.
        weight = weight * (1 / np.sqrt(i * kh * kw) / jnp.max(jnp.abs(weight), axis=(1, 2, 3), keepdims=True))
        styles = styles / jnp.max(jnp.abs(styles), axis=1, keepdims=True)
    dcoefs = None
    if demodulate:
        dcoefs = lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(2, 3)).T + 1e-8)  # [N,O]

    if not fused_modconv:
        y = conv(x * broadcast_like(styles[:, None, None, :], x), weight, 1)
        if demodulate:
            y = y * broadcast_like(dcoefs[:, None, None, :], y)
        if noise is not None:
            y = y + broadcast_like(noise, y)
        return y

    wmod = weight[None] * styles[:, None, :, None, None]             # [N,O,I,kh,kw]
    if demodulate:
        dcoefs = lax.rsqrt(jnp.sum(jnp.square(wmod), axis=(2, 3, 4)) + 1e-8)
        wmod = wmod * dcoefs[:, :, None, None, None]
    y = _grouped_per_sample(x, wmod, conv)
    if noise is not None:
        y = y + broadcast_like(noise, y)
    return y

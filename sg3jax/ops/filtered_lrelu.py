"""Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3 (paper Section 3.2, Figure 4)."""

from typing import Optional, Sequence, Union

import numpy as np

from sg3jax.ops.bias_act import bias_act
from sg3jax.ops.upfirdn2d import _parse_padding, _parse_scaling, upfirdn2d


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
    impl: str = 'fast',         # 'fast', 'conv' or 'ref': upfirdn2d's implementations.
):
    """bias -> upsample -> FIR -> gain -> leaky ReLU -> clamp -> FIR -> downsample (official `filtered_lrelu`).

    Exact steps: (1) add `b` along channels; (2) upsample by zero-insertion by `up`; (3) pad/crop by `padding`;
    (4) convolve with `fu`, scaled so the upsampling keeps the signal's magnitude (`gain = up**2` in upfirdn2d
    terms, i.e. `up` per separable pass); (5) multiply by `gain`, leaky ReLU with `slope` (gain applied after the
    activation, as the official ref); (6) clamp to [-clamp, clamp]; (7) convolve with `fd` (valid, no padding);
    (8) keep every `down`-th sample. The nonlinearity runs at the temporary (upsampled) rate, which is what bounds
    the aliasing it creates (Appendix D of the paper).
    """
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    if upx != upy or downx != downy:
        raise ValueError('filtered_lrelu supports only isotropic up/down factors')
    padding = _parse_padding(padding)
    x = bias_act(x, b, dim=-1)
    x = upfirdn2d(x, fu, up=upx, padding=padding, gain=upx ** 2, flip_filter=flip_filter, impl=impl)
    x = bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d(x, fd, down=downx, flip_filter=flip_filter, impl=impl)
    return x

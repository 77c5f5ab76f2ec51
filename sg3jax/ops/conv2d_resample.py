"""2-D convolution with optional FIR up/downsampling (the official `conv2d_resample`), NHWC."""

import jax.numpy as jnp
from jax import lax

from sg3jax.ops.convolution import conv_general_dilated
from sg3jax.ops.upfirdn2d import _parse_padding, filter_size, upfirdn2d


def conv2d(x, w, stride=1, padding=(0, 0, 0, 0), groups: int = 1, flip_weight: bool = True, impl: str = 'fast'):
    """Plain convolution. x: [N,H,W,C] NHWC; w: [O, I/groups, kh, kw] (official OIHW layout, as stored).

    `flip_weight=True` is correlation (torch's conv2d); False flips the kernel (true convolution).
    `padding` is [x0, x1, y0, y1]. impl='fast' lowers to matmuls on the CPU (sg3jax.ops.convolution), 'ref' is
    XLA's convolution everywhere."""
    px0, px1, py0, py1 = padding
    if not flip_weight:
        w = jnp.flip(w, axis=(2, 3))
    kernel = jnp.transpose(w, (2, 3, 1, 0)).astype(x.dtype)  # [kh,kw,I/g,O]
    return conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=[(py0, py1), (px0, px1)],
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups,
        precision=lax.Precision.HIGHEST, impl='ref' if impl == 'ref' else 'fast')


def conv2d_resample(
    x,                      # Input [N, H, W, C] (NHWC).
    w,                      # Weight [O, C/groups, kh, kw] (official layout).
    f=None,                 # Low-pass filter for resampling (from setup_filter); None = identity.
    up: int = 1,            # Integer upsampling factor.
    down: int = 1,          # Integer downsampling factor.
    padding=0,              # Padding w.r.t. the upsampled image: int, [x, y] or [x0, x1, y0, y1].
    groups: int = 1,        # Grouped convolution.
    flip_weight: bool = True,   # False = convolution, True = correlation (torch conv2d).
    flip_filter: bool = False,  # False = convolution, True = correlation.
    impl: str = 'fast',
):
    """Convolution with up/downsampling, padding applied once at the start (official semantics).

    Computes, up to float rounding: upfirdn2d(x, f, up, pad, gain=up**2) -> conv(w) -> upfirdn2d(f, down).
    The order of the linear steps follows the official fast paths where that changes the cost (downsample before
    a 1x1 conv, strided conv after the FIR for down-only), since all of them are linear and shift-invariant.
    """
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f'up and down must be ints >= 1, got up={up}, down={down}')
    _, _, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Padding adjustment for the filter's support (identical to the official code).
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # 1x1 convolution with downsampling only: downsample first (fewer pixels to convolve).
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl=impl)
        return conv2d(x, w, groups=groups, flip_weight=flip_weight, impl=impl)
    # 1x1 convolution with upsampling only: convolve first.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = conv2d(x, w, groups=groups, flip_weight=flip_weight, impl=impl)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    # Downsampling only: FIR at full rate, then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl=impl)
        return conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight, impl=impl)
    # No resampling: the convolution pads by itself (negative padding = crop, handled by XLA).
    if up == 1 and down == 1:
        return conv2d(x, w, padding=pad, groups=groups, flip_weight=flip_weight, impl=impl)
    # Upsampling (optionally followed by downsampling): polyphase FIR upsample, then a valid convolution.
    x = upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    x = conv2d(x, w, groups=groups, flip_weight=flip_weight, impl=impl)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
    return x

"""Image resampling used by the metrics, matching the PyTorch ops the official metric code relies on.

- `tf1_resize_bilinear`: TensorFlow 1's `ResizeBilinear` (align_corners=False, no half-pixel centres), which the
  TorchScript feature networks emulate with `affine_grid`/`grid_sample(bilinear, border)` and a shifted theta:
  output pixel i samples input coordinate i * in/out, clamped to the last pixel.
- `affine_grid` / `grid_sample`: torch.nn.functional's, align_corners=False, zero padding; used by EQ-R
  (official `metrics/equivariance.py:apply_affine_transformation`).
All arrays are NHWC.
"""

import numpy as np
import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST


def _tf1_weights(size_in, size_out):
    """[out, in] interpolation matrix: row i puts weights on floor(s), floor(s)+1 for s = i * in / out."""
    src = np.arange(size_out, dtype=np.float64) * (size_in / size_out)
    src = np.minimum(src, size_in - 1)                               # grid_sample padding_mode='border'
    x0 = np.floor(src).astype(np.int64)
    x1 = np.minimum(x0 + 1, size_in - 1)
    w1 = src - x0
    m = np.zeros([size_out, size_in], np.float64)
    np.add.at(m, (np.arange(size_out), x0), 1 - w1)
    np.add.at(m, (np.arange(size_out), x1), w1)
    return m.astype(np.float32)


def tf1_resize_bilinear(x, height, width):
    """x [N, H, W, C] float -> [N, height, width, C]; identity when the size already matches."""
    _, h, w, _ = x.shape
    if (h, w) == (height, width):
        return x
    x = jnp.einsum('oh,nhwc->nowc', _tf1_weights(h, height), x, precision=_HI)
    return jnp.einsum('pw,nowc->nopc', _tf1_weights(w, width), x, precision=_HI)


def affine_grid(theta, height, width):
    """torch affine_grid(theta [N, 2, 3], align_corners=False) -> grid [N, height, width, 2] of (x, y)."""
    xs = (2 * jnp.arange(width, dtype=jnp.float32) + 1) / width - 1
    ys = (2 * jnp.arange(height, dtype=jnp.float32) + 1) / height - 1
    base = jnp.stack([jnp.broadcast_to(xs[None, :], (height, width)),
                      jnp.broadcast_to(ys[:, None], (height, width)),
                      jnp.ones((height, width), jnp.float32)], axis=-1)        # [H, W, 3]
    return jnp.einsum('hwk,njk->nhwj', base, theta, precision=_HI)


def grid_sample(x, grid, mode='bilinear'):
    """torch grid_sample(x, grid, mode, padding_mode='zeros', align_corners=False), NHWC.

    x [N, H, W, C], grid [N, Ho, Wo, 2] normalised (x, y) -> [N, Ho, Wo, C]. Samples outside contribute zero."""
    n, h, w, c = x.shape
    ix = ((grid[..., 0] + 1) * w - 1) / 2
    iy = ((grid[..., 1] + 1) * h - 1) / 2

    def gather(img, yy, xx):  # img [H, W, C]; yy, xx int [Ho, Wo]; zero outside
        valid = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        v = img[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
        return v * valid[..., None].astype(img.dtype)

    def one(img, ix, iy):
        if mode == 'nearest':
            return gather(img, jnp.round(iy).astype(jnp.int32), jnp.round(ix).astype(jnp.int32))
        x0 = jnp.floor(ix)
        y0 = jnp.floor(iy)
        wx1 = (ix - x0)[..., None]
        wy1 = (iy - y0)[..., None]
        x0 = x0.astype(jnp.int32)
        y0 = y0.astype(jnp.int32)
        return (gather(img, y0, x0) * (1 - wx1) * (1 - wy1) + gather(img, y0, x0 + 1) * wx1 * (1 - wy1) +
                gather(img, y0 + 1, x0) * (1 - wx1) * wy1 + gather(img, y0 + 1, x0 + 1) * wx1 * wy1)

    if mode not in ('bilinear', 'nearest'):
        raise ValueError(f"grid_sample mode must be 'bilinear' or 'nearest', got {mode!r}")
    return jax.vmap(one)(x, ix, iy)

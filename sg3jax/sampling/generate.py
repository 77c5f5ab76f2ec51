"""Seeds -> z -> ws -> uint8 images, batched and jitted; what gen_images, gen_video, gen_style_mix, avg_spectra and
the notebooks share.

Conventions of the official tools (NVlabs/stylegan3 gen_images.py, gen_video.py, avg_spectra.py; stylegan2-ada
style_mixing.py), kept so a seed means the same image here as there:
  * z of seed s is np.random.RandomState(s).randn(z_dim) (float64, cast to float32 by the mapping network);
  * pixels are (img * 127.5 + 128) clamped to [0, 255] and truncated to uint8 (not rounded);
  * gen_images passes the inverse of make_transform(translate, rotate) as the StyleGAN3 input transform.
Truncation pulls ws toward the global w_avg, as the official tools, for conditional models too. As an option
(`trunc_center='class'`, the tools' --trunc-center=class) it pulls toward the mean w of the requested class
instead: for a conditional model w_avg averages over all classes, so strong truncation toward it drifts toward
other classes. The class mean is estimated by mapping `CLASS_MEAN_SAMPLES` z ~ N(0, I) (a fixed PRNG key) with
that class's one-hot label.

G is a `Generator(params, buffers, cfg)` tuple; compiled functions are cached per config, so repeated calls (or
several tools in one process, a notebook) compile once per batch shape.
"""

import functools
import sys
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax import utils
from sg3jax.networks import generator
from sg3jax.networks.layers import lerp
from sg3jax.sampling.cli import TRUNC_CENTERS, ToolError

CLASS_MEAN_SAMPLES = 10_000     # z samples per class mean w; the estimate's std error is ~1% of w's spread
CLASS_MEAN_BATCH = 1000


class Generator(NamedTuple):
    params: dict
    buffers: dict
    cfg: dict

    @property
    def spec(self):
        return generator.spec(self.cfg)


def as_generator(G):
    return G if isinstance(G, Generator) else Generator(*G)

#----------------------------------------------------------------------------
# Latents and labels.

def z_from_seeds(seeds, z_dim) -> np.ndarray:
    """[N, z_dim] float32: row i is np.random.RandomState(seeds[i]).randn(z_dim), as every official tool."""
    return np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds]).astype(np.float32)


def check_class(G, class_idx, flag='--class') -> Optional[int]:
    """The validated class index for G, or None for an unconditional G (a given index is then ignored with a
    warning, as the official gen_images). Conditional G without a class, or an index outside [0, c_dim): error."""
    c_dim = as_generator(G).spec.c_dim
    if c_dim == 0:
        if class_idx is not None:
            print(f'warn: {flag}={class_idx} ignored when running on an unconditional network', file=sys.stderr)
        return None
    if class_idx is None:
        raise ToolError(f'must specify class label with {flag} when using a conditional network '
                        f'(c_dim={c_dim}; classes 0..{c_dim - 1})')
    if not 0 <= int(class_idx) < c_dim:
        raise ToolError(f'{flag}={class_idx} is out of range: this network has c_dim={c_dim} classes '
                        f'(0..{c_dim - 1})')
    return int(class_idx)


def labels(G, class_idx, n) -> np.ndarray:
    """[n, c_dim] one-hot rows of `class_idx` (zeros [n, 0] for an unconditional G)."""
    c_dim = as_generator(G).spec.c_dim
    c = np.zeros([n, c_dim], np.float32)
    if c_dim:
        c[:, class_idx] = 1
    return c

#----------------------------------------------------------------------------
# Compiled pieces, cached per config (jit caches per function object, so keep one object per config).

@utils.cache_by_value(maxsize=16)
def _compiled(cfg):
    spec = generator.spec(cfg)

    @jax.jit
    def mapping_raw(params, buffers, z, c):
        return generator.mapping(params, buffers, z, c, cfg)             # [N, num_ws, w_dim], untruncated

    @jax.jit
    def mapping_trunc(params, buffers, z, c, center, psi, cutoff):
        ws = generator.mapping(params, buffers, z, c, cfg)
        return truncate(ws, center, psi, cutoff)

    @functools.partial(jax.jit, static_argnames=('noise_mode',))
    def synthesis_uint8(params, buffers, ws, transform, noise_keys, noise_mode):
        if spec.arch == 'stylegan3':
            img = generator.synthesis(params, buffers, ws, cfg, transform=transform)
        elif noise_mode == 'random':
            # One key per image (vmapped), so an image's noise depends only on its own key, not on the batch.
            one = lambda w, k: generator.synthesis(params, buffers, w[None], cfg, noise_mode='random',
                                                   noise_key=k)[0]
            img = jax.vmap(one)(ws, noise_keys)
        else:
            img = generator.synthesis(params, buffers, ws, cfg, noise_mode=noise_mode)
        return to_uint8(img)

    return mapping_raw, mapping_trunc, synthesis_uint8


def _fns(G):
    return _compiled(generator.normalize_config(G.cfg))


def truncate(ws, center, psi, cutoff):
    """ws[:, :cutoff] = lerp(center, ws, psi) (official Generator truncation, but with any centre: w_avg or a class
    mean, [w_dim] or per-sample [N, w_dim]); psi == 1 leaves ws exactly unchanged, as the official `if psi != 1`."""
    center = jnp.asarray(center, jnp.float32)
    center = center[:, None, :] if center.ndim == 2 else center
    trunc = lerp(center, ws, psi)
    mask = (jnp.arange(ws.shape[1]) < cutoff)[None, :, None] & (psi != 1)
    return jnp.where(mask, trunc, ws)


def to_uint8(img):
    """[-1, 1] float -> uint8 as the official tools: (x * 127.5 + 128).clamp(0, 255) then truncation."""
    return jnp.clip(img * 127.5 + 128, 0, 255).astype(jnp.uint8)


def _batched(fn, arrays, batch_size):
    """fn over fixed-size chunks of the leading axis (the last chunk padded by repeating its last row), so one
    compiled shape serves any count; outputs concatenated and trimmed."""
    n = len(arrays[0])
    outs = []
    for i in range(0, n, batch_size):
        chunk = [a[i:i + batch_size] for a in arrays]
        m = len(chunk[0])
        if m < batch_size:
            chunk = [jnp.concatenate([a, jnp.repeat(a[-1:], batch_size - m, axis=0)]) for a in chunk]
        outs.append(np.asarray(fn(*chunk))[:m])
    return np.concatenate(outs)

#----------------------------------------------------------------------------
# Truncation centre.

def class_mean_w(G, class_idx, num=CLASS_MEAN_SAMPLES, batch_size=CLASS_MEAN_BATCH, seed=0) -> np.ndarray:
    """[w_dim] float32: the mean untruncated w of class `class_idx`, over `num` z ~ N(0, I) drawn from
    jax.random.key(seed) (accumulated in float64)."""
    G = as_generator(G)
    s = G.spec
    mapping_raw = _fns(G)[0]
    total = np.zeros([s.w_dim], np.float64)
    for i in range(0, num, batch_size):
        m = min(batch_size, num - i)
        z = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), (batch_size, s.z_dim))
        c = jnp.asarray(labels(G, class_idx, batch_size))
        ws = np.asarray(mapping_raw(G.params, G.buffers, z, c))[:m, 0]
        total += ws.astype(np.float64).sum(axis=0)
    return (total / num).astype(np.float32)


def truncation_center(G, class_idx=None, psi=1.0, trunc_center='w_avg', num=CLASS_MEAN_SAMPLES) -> np.ndarray:
    """The w truncation pulls toward: w_avg (official), or with trunc_center='class' the mean w of `class_idx`
    (conditional G only; see the module docstring). With psi == 1 nothing is truncated and w_avg is returned
    without estimating anything."""
    G = as_generator(G)
    if trunc_center not in TRUNC_CENTERS:
        raise ToolError(f'--trunc-center must be one of {", ".join(TRUNC_CENTERS)}, got {trunc_center!r}')
    if trunc_center == 'class' and (G.spec.c_dim == 0 or class_idx is None):
        raise ToolError('--trunc-center=class needs a conditional network and --class')
    if trunc_center == 'w_avg' or psi == 1:
        return np.asarray(G.buffers['mapping']['w_avg'], np.float32)
    return class_mean_w(G, class_idx, num=num)

#----------------------------------------------------------------------------
# Mapping and synthesis.

def mapping(G, z, c, psi=1.0, cutoff=None, center=None, batch_size=16) -> np.ndarray:
    """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim], truncated toward `center` (default w_avg) for the
    first `cutoff` ws (all when None)."""
    G = as_generator(G)
    num_ws = G.spec.num_ws
    center = np.asarray(G.buffers['mapping']['w_avg'] if center is None else center, np.float32)
    cutoff = num_ws if cutoff is None else int(cutoff)
    f = _fns(G)[1]
    return _batched(lambda z_, c_: f(G.params, G.buffers, z_, c_, center, jnp.float32(psi), jnp.int32(cutoff)),
                    [jnp.asarray(z, jnp.float32), jnp.asarray(c, jnp.float32)], batch_size)


def synthesis(G, ws, transform=None, noise_mode='const', noise_seeds=None, batch_size=16) -> np.ndarray:
    """ws [N, num_ws, w_dim] -> uint8 [N, H, W, C].

    transform: StyleGAN3 only; None = the transform buffer, or [3, 3] for all, or [N, 3, 3] per image (the
    inverse of make_transform, as the official gen_images passes it). noise_mode (StyleGAN2 only; StyleGAN3 has no
    noise): 'const' | 'none' | 'random', where image i's noise comes from jax.random.key(noise_seeds[i])
    (official random noise is torch's, which no other framework reproduces)."""
    G = as_generator(G)
    if noise_mode not in ('const', 'random', 'none'):
        raise ToolError(f"--noise-mode must be 'const', 'random' or 'none', got {noise_mode!r}")
    n = len(ws)
    is_sg3 = G.spec.arch == 'stylegan3'
    if transform is not None and not is_sg3:
        raise ToolError('--translate/--rotate move the StyleGAN3 input; this is a StyleGAN2 generator '
                        '(constant input)')
    if is_sg3:
        t = G.buffers['synthesis']['input']['transform'] if transform is None else transform
        t = np.broadcast_to(np.asarray(t, np.float32), (n, 3, 3))
    else:
        t = np.zeros((n, 0), np.float32)    # placeholder row per image, unused
    if noise_mode == 'random' and not is_sg3:
        seeds = np.arange(n) if noise_seeds is None else np.asarray(noise_seeds)
        keys = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(jnp.asarray(seeds, jnp.uint32))
    else:
        keys = jnp.zeros((n, 2), jnp.uint32)
    f = _fns(G)[2]

    def run(ws_, t_, k_):
        return f(G.params, G.buffers, ws_, t_ if is_sg3 else None, jax.random.wrap_key_data(k_),
                 noise_mode=noise_mode if not is_sg3 else 'const')
    return _batched(run, [jnp.asarray(ws, jnp.float32), jnp.asarray(t), keys], batch_size)


def render_seeds(G, seeds, psi=1.0, cutoff=None, class_idx=None, noise_mode='const', transform=None,
                 center=None, batch_size=16, trunc_center='w_avg') -> np.ndarray:
    """uint8 [N, H, W, C] images of `seeds` (module docstring conventions). For a conditional G pass class_idx
    (validated); `center` (a w) overrides the truncation centre, else `trunc_center` picks it."""
    G = as_generator(G)
    class_idx = check_class(G, class_idx)
    if center is None:
        center = truncation_center(G, class_idx, psi, trunc_center)
    z = z_from_seeds(seeds, G.spec.z_dim)
    ws = mapping(G, z, labels(G, class_idx, len(seeds)), psi, cutoff, center, batch_size)
    return synthesis(G, ws, transform, noise_mode, noise_seeds=seeds, batch_size=batch_size)

#----------------------------------------------------------------------------
# StyleGAN3 input transform.

def make_transform(translate=(0.0, 0.0), angle=0.0) -> np.ndarray:
    """[3, 3] float64 rotation by `angle` degrees and translation (official gen_images make_transform)."""
    m = np.eye(3)
    s, c = np.sin(angle / 360.0 * np.pi * 2), np.cos(angle / 360.0 * np.pi * 2)
    m[0, 0], m[0, 1], m[0, 2] = c, s, translate[0]
    m[1, 0], m[1, 1], m[1, 2] = -s, c, translate[1]
    return m


def input_transform(translate=(0.0, 0.0), angle=0.0) -> np.ndarray:
    """What the generator takes: the inverse of make_transform (the official code passes the inverse "to avoid
    potentially failing numerical operations in the network"), computed in float64 as the official np.linalg.inv,
    then float32 like the buffer."""
    return np.linalg.inv(make_transform(translate, angle)).astype(np.float32)

"""StyleGAN2 synthesis network (Karras et al. 2020, configs E-F), as the official networks_stylegan2.py. NHWC."""

import dataclasses
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax import utils
from sg3jax.networks.layers import conv_apply, conv_init, fc_apply, fc_init
from sg3jax.ops import bias_act, modulated_conv2d_sg2, setup_filter, upsample2d

# Official SynthesisNetwork / SynthesisBlock / SynthesisLayer defaults.
SYNTHESIS_DEFAULTS = dict(
    channel_base=32768, channel_max=512, num_fp16_res=4, architecture='skip', resample_filter=(1, 3, 3, 1),
    conv_clamp=256, fp16_channels_last=False, fused_modconv_default=True, kernel_size=3, use_noise=True,
    activation='lrelu',
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str                 # b<res>
    resolution: int
    in_channels: int          # 0 = first block (const input)
    out_channels: int
    is_last: bool
    use_fp16: bool
    num_conv: int
    num_torgb: int


@dataclasses.dataclass(frozen=True)
class SynthesisSpec:
    w_dim: int
    img_resolution: int
    img_channels: int
    num_ws: int
    blocks: Tuple[BlockSpec, ...]
    architecture: str
    resample_filter: Tuple[float, ...]
    conv_clamp: Optional[float]
    fused_modconv_default: object
    kernel_size: int
    use_noise: bool
    activation: str


def synthesis_spec(w_dim, img_resolution, img_channels, **kwargs) -> SynthesisSpec:
    unknown = set(kwargs) - set(SYNTHESIS_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown StyleGAN2 synthesis option(s) {sorted(unknown)}; '
                         f'expected a subset of {sorted(SYNTHESIS_DEFAULTS)}')
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
    return _spec_cached(w_dim, img_resolution, img_channels, kwargs)


@utils.cache_by_value(maxsize=64)
def _spec_cached(w_dim, img_resolution, img_channels, kwargs):
    o = {**SYNTHESIS_DEFAULTS, **kwargs}
    if o['architecture'] not in ('orig', 'skip', 'resnet'):
        raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {o['architecture']!r}")
    log2 = int(np.log2(img_resolution))
    resolutions = [2 ** i for i in range(2, log2 + 1)]
    channels = {res: min(o['channel_base'] // res, o['channel_max']) for res in resolutions}
    fp16_resolution = max(2 ** (log2 + 1 - o['num_fp16_res']), 8)
    blocks, num_ws = [], 0
    for res in resolutions:
        in_ch = channels[res // 2] if res > 4 else 0
        is_last = res == img_resolution
        num_conv = 1 if in_ch == 0 else 2
        num_torgb = 1 if (is_last or o['architecture'] == 'skip') else 0
        blocks.append(BlockSpec(f'b{res}', res, in_ch, channels[res], is_last, res >= fp16_resolution,
                                num_conv, num_torgb))
        num_ws += num_conv + (num_torgb if is_last else 0)
    return SynthesisSpec(w_dim, img_resolution, img_channels, num_ws, tuple(blocks), o['architecture'],
                         tuple(float(v) for v in o['resample_filter']), o['conv_clamp'],
                         o['fused_modconv_default'], o['kernel_size'], o['use_noise'], o['activation'])


def _resample_filter(spec):
    return setup_filter(np.asarray(spec.resample_filter, np.float32))

#----------------------------------------------------------------------------

def _layer_init(key, in_ch, out_ch, w_dim, res, kernel_size, use_noise):
    k1, k2, k3 = jax.random.split(key, 3)
    p = {'affine': fc_init(k1, w_dim, in_ch, bias_init=1),
         'weight': jax.random.normal(k2, (out_ch, in_ch, kernel_size, kernel_size), jnp.float32),
         'bias': jnp.zeros([out_ch], jnp.float32)}
    b = {}
    if use_noise:
        p['noise_strength'] = jnp.zeros([], jnp.float32)
        b['noise_const'] = jax.random.normal(k3, (res, res), jnp.float32)
    return p, b


def synthesis_init(key, spec: SynthesisSpec):
    params, buffers = {}, {}
    for blk, bkey in zip(spec.blocks, jax.random.split(key, len(spec.blocks))):
        keys = jax.random.split(bkey, 5)
        p, b = {}, {}
        if blk.in_channels == 0:
            p['const'] = jax.random.normal(keys[0], (blk.out_channels, blk.resolution, blk.resolution), jnp.float32)
        else:
            p['conv0'], b['conv0'] = _layer_init(keys[1], blk.in_channels, blk.out_channels, spec.w_dim,
                                                 blk.resolution, spec.kernel_size, spec.use_noise)
        p['conv1'], b['conv1'] = _layer_init(keys[2], blk.out_channels, blk.out_channels, spec.w_dim,
                                             blk.resolution, spec.kernel_size, spec.use_noise)
        if blk.num_torgb:
            p['torgb'] = {'affine': fc_init(keys[3], spec.w_dim, blk.out_channels, bias_init=1),
                          'weight': jax.random.normal(keys[4], (spec.img_channels, blk.out_channels, 1, 1),
                                                      jnp.float32),
                          'bias': jnp.zeros([spec.img_channels], jnp.float32)}
        if blk.in_channels != 0 and spec.architecture == 'resnet':
            p['skip'] = conv_init(keys[0], blk.in_channels, blk.out_channels, 1, bias=False)
        params[blk.name] = p
        buffers[blk.name] = {k: v for k, v in b.items() if v}
    return params, buffers


def _synthesis_layer(p, b, x, w, spec, res, up, noise_mode, key, fused_modconv, gain=1.0, impl='fast'):
    """Official SG2 SynthesisLayer: modulated conv (+ noise) -> bias, lrelu * sqrt(2) * gain, clamp * gain."""
    styles = fc_apply(p['affine'], w)
    noise = None
    if spec.use_noise and noise_mode == 'random':
        if key is None:
            raise ValueError("noise_mode='random' needs a PRNG key (pass noise_key=...)")
        noise = jax.random.normal(key, (x.shape[0], res, res, 1), jnp.float32) * p['noise_strength']
    if spec.use_noise and noise_mode == 'const':
        noise = (b['noise_const'] * p['noise_strength'])[None, :, :, None]
    k = p['weight'].shape[-1]
    x = modulated_conv2d_sg2(x, p['weight'], styles, noise=noise, up=up, padding=k // 2,
                             resample_filter=_resample_filter(spec), flip_weight=(up == 1),
                             fused_modconv=fused_modconv, impl=impl)
    act_gain = np.sqrt(2) * gain if spec.activation in ('lrelu', 'relu', 'swish') else gain
    act_clamp = spec.conv_clamp * gain if spec.conv_clamp is not None else None
    return bias_act(x, p['bias'], dim=-1, act=spec.activation, gain=act_gain, clamp=act_clamp)


def _torgb(p, x, w, spec, fused_modconv, impl='fast'):
    styles = fc_apply(p['affine'], w) * (1 / np.sqrt(p['weight'].shape[1]))
    x = modulated_conv2d_sg2(x, p['weight'], styles, demodulate=False, fused_modconv=fused_modconv, impl=impl)
    return bias_act(x, p['bias'], dim=-1, clamp=spec.conv_clamp)


def _synthesis_block(p, b, x, img, bws, keys, *, f, blk, spec, noise_mode, fused_modconv, impl, dtype):
    """One SynthesisBlock (official networks_stylegan2.py): (x, img) of the previous block -> (x, img).
    `bws` are the block's ws (its convs', then torgb's), `keys` its convs' noise keys (or Nones), `f` the
    resampling filter (a concrete array: the FIR taps are unrolled)."""
    x = x.astype(dtype) if x is not None else None
    wi, ki = iter(bws), iter(keys)
    n = bws[0].shape[0]
    if blk.in_channels == 0:
        x = jnp.broadcast_to(jnp.transpose(p['const'], (1, 2, 0))[None].astype(dtype),
                             (n, blk.resolution, blk.resolution, blk.out_channels))
        x = _synthesis_layer(p['conv1'], b.get('conv1'), x, next(wi), spec, blk.resolution, 1, noise_mode,
                             next(ki), fused_modconv, impl=impl)
    elif spec.architecture == 'resnet':
        y = conv_apply(p['skip'], x, up=2, resample_filter=f, gain=np.sqrt(0.5), impl=impl)
        x = _synthesis_layer(p['conv0'], b.get('conv0'), x, next(wi), spec, blk.resolution, 2, noise_mode,
                             next(ki), fused_modconv, impl=impl)
        x = _synthesis_layer(p['conv1'], b.get('conv1'), x, next(wi), spec, blk.resolution, 1, noise_mode,
                             next(ki), fused_modconv, gain=np.sqrt(0.5), impl=impl)
        x = y + x
    else:
        x = _synthesis_layer(p['conv0'], b.get('conv0'), x, next(wi), spec, blk.resolution, 2, noise_mode,
                             next(ki), fused_modconv, impl=impl)
        x = _synthesis_layer(p['conv1'], b.get('conv1'), x, next(wi), spec, blk.resolution, 1, noise_mode,
                             next(ki), fused_modconv, impl=impl)
    if img is not None:
        img = upsample2d(img, f, impl=impl)
    if blk.num_torgb:
        y = _torgb(p['torgb'], x, next(wi), spec, fused_modconv, impl=impl).astype(jnp.float32)
        img = img + y if img is not None else y
    return x, img


def synthesis_apply(params, buffers, ws, spec: SynthesisSpec, noise_mode='const', noise_key=None,
                    fused_modconv=None, impl='fast', mixed_dtype=None, remat=False):
    """ws [N, num_ws, w_dim] -> images [N, R, R, C] (NHWC); options as synthesis_activations."""
    return synthesis_activations(params, buffers, ws, spec, noise_mode=noise_mode, noise_key=noise_key,
                                 fused_modconv=fused_modconv, impl=impl, mixed_dtype=mixed_dtype, remat=remat)[0]


def synthesis_activations(params, buffers, ws, spec: SynthesisSpec, noise_mode='const', noise_key=None,
                          fused_modconv=None, impl='fast', mixed_dtype=None, remat=False):
    """(images, {'<block>.x', '<block>.img': each block's outputs}) of ws [N, num_ws, w_dim]: the images
    [N, R, R, C] (NHWC) and every block's outputs, for localising parity differences.

    noise_mode: 'const' (the stored noise_const buffers; the default here, since it needs no key), 'random'
    (needs `noise_key`), or 'none'. fused_modconv: None = the config's `fused_modconv_default`. The official
    'inference_only' (grouped convs for inference, dense for training) maps to the dense form everywhere here:
    on XLA the dense form is the faster one in both cases, and XLA's SPMD partitioner mis-partitions the
    batch-grouped convolution's gradient over a sharded batch. `mixed_dtype` (jnp.bfloat16 / jnp.float16): the
    compute dtype of the blocks the official code runs in fp16 on CUDA (resolution >= 2**(log2(R) + 1 -
    num_fp16_res), at least 8); the image accumulates in float32. None = float32 everywhere. `remat`:
    rematerialise each block (`jax.checkpoint`) under differentiation: only the blocks' (x, img) are kept for the
    backward pass, the rest is recomputed; same values, about one more forward of compute.
    """
    if noise_mode not in ('random', 'const', 'none'):
        raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
    if ws.ndim != 3 or ws.shape[1:] != (spec.num_ws, spec.w_dim):
        raise ValueError(f'ws must have shape [N, {spec.num_ws}, {spec.w_dim}], got {ws.shape}')
    if fused_modconv is None:
        fused_modconv = spec.fused_modconv_default
    if fused_modconv == 'inference_only':
        fused_modconv = False
    ws = ws.astype(jnp.float32)
    f = _resample_filter(spec)
    n_layers = 2 * len(spec.blocks)
    keys = iter(list(jax.random.split(noise_key, n_layers)) if noise_key is not None else [None] * n_layers)
    x = img = None
    w_idx = 0
    acts = {}
    for blk in spec.blocks:
        dtype = mixed_dtype if (mixed_dtype is not None and blk.use_fp16) else jnp.float32
        bws = [ws[:, w_idx + i] for i in range(blk.num_conv + blk.num_torgb)]
        w_idx += blk.num_conv
        bkeys = [next(keys) for _ in range(blk.num_conv)]
        run_block = functools.partial(_synthesis_block, f=f, blk=blk, spec=spec, noise_mode=noise_mode,
                                      fused_modconv=fused_modconv, impl=impl, dtype=dtype)
        if remat:
            run_block = jax.checkpoint(run_block)
        x, img = run_block(params[blk.name], buffers.get(blk.name, {}), x, img, bws, bkeys)
        acts[f'{blk.name}.x'], acts[f'{blk.name}.img'] = x, img
    return img, acts

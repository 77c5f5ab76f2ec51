"""StyleGAN2 discriminator (resnet by default; also 'orig' and 'skip'), used by StyleGAN2 and StyleGAN3. NHWC.

Conditional models project the output onto a label embedding `cmap` produced by the D's own mapping network
(Miyato & Koyama 2018 projection discriminator, as the official code).
"""

import dataclasses
import functools
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax import utils
from sg3jax.networks.layers import conv_apply, conv_init, fc_apply, fc_init
from sg3jax.networks.mapping import mapping_apply, mapping_init
from sg3jax.ops import downsample2d, setup_filter

D_DEFAULTS = dict(
    architecture='resnet', channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None,
    block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={},
)
_BLOCK_KEYS = {'activation', 'resample_filter', 'fp16_channels_last', 'freeze_layers'}
_EPILOGUE_KEYS = {'mbstd_group_size', 'mbstd_num_channels', 'activation'}


@dataclasses.dataclass(frozen=True)
class DBlockSpec:
    name: str
    resolution: int
    in_channels: int
    tmp_channels: int
    out_channels: int
    use_fp16: bool            # official: resolution >= max(2**(log2(R) + 1 - num_fp16_res), 8)


@dataclasses.dataclass(frozen=True)
class DSpec:
    c_dim: int
    img_resolution: int
    img_channels: int
    architecture: str
    blocks: Tuple[DBlockSpec, ...]
    channels_4: int
    cmap_dim: int
    conv_clamp: Optional[float]
    activation: str
    resample_filter: Tuple[float, ...]
    mbstd_group_size: Optional[int]
    mbstd_num_channels: int
    mapping_frozen: Any       # utils.freeze of the label mapping options (_mapping_kwargs thaws it)
    freeze_layers: int = 0    # Freeze-D: the first layers of the blocks (see `trainable`)


def d_spec(c_dim, img_resolution, img_channels, **kwargs) -> DSpec:
    unknown = set(kwargs) - set(D_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown discriminator option(s) {sorted(unknown)}; expected a subset of '
                         f'{sorted(D_DEFAULTS)}')
    return _d_spec_cached(c_dim, img_resolution, img_channels, kwargs)


@utils.cache_by_value(maxsize=64)
def _d_spec_cached(c_dim, img_resolution, img_channels, kwargs):
    o = {**D_DEFAULTS, **kwargs}
    bk, ek = dict(o['block_kwargs']), dict(o['epilogue_kwargs'])
    for name, kw, allowed in (('block_kwargs', bk, _BLOCK_KEYS), ('epilogue_kwargs', ek, _EPILOGUE_KEYS)):
        if set(kw) - allowed:
            raise ValueError(f'unknown {name} option(s) {sorted(set(kw) - allowed)}')
    if not isinstance(bk.get('freeze_layers', 0), int) or bk.get('freeze_layers', 0) < 0:
        raise ValueError(f'block_kwargs.freeze_layers must be a non-negative int, got {bk["freeze_layers"]!r}')
    if img_resolution < 8 or img_resolution & (img_resolution - 1):
        raise ValueError(f'img_resolution must be a power of two >= 8, got {img_resolution}')
    if o['architecture'] not in ('orig', 'skip', 'resnet'):
        raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {o['architecture']!r}")
    log2 = int(np.log2(img_resolution))
    resolutions = [2 ** i for i in range(log2, 2, -1)]
    ch = {res: min(o['channel_base'] // res, o['channel_max']) for res in resolutions + [4]}
    cmap_dim = ch[4] if o['cmap_dim'] is None else o['cmap_dim']
    if c_dim == 0:
        cmap_dim = 0
    fp16_resolution = max(2 ** (log2 + 1 - o['num_fp16_res']), 8)
    blocks = tuple(DBlockSpec(f'b{res}', res, ch[res] if res < img_resolution else 0, ch[res], ch[res // 2],
                              res >= fp16_resolution)
                   for res in resolutions)
    return DSpec(c_dim, img_resolution, img_channels, o['architecture'], blocks, ch[4], cmap_dim, o['conv_clamp'],
                 bk.get('activation', 'lrelu'), tuple(float(v) for v in bk.get('resample_filter', (1, 3, 3, 1))),
                 ek.get('mbstd_group_size', 4), ek.get('mbstd_num_channels', 1),
                 utils.freeze(o['mapping_kwargs']), bk.get('freeze_layers', 0))


def block_layers(spec: DSpec):
    """[(block, layer)] of the D blocks in the official layer order, from the highest resolution down and within
    a block fromrgb (first block, or 'skip'), conv0, conv1, skip ('resnet'): what Freeze-D counts."""
    layers = []
    for blk in spec.blocks:
        if blk.in_channels == 0 or spec.architecture == 'skip':
            layers.append((blk.name, 'fromrgb'))
        layers += [(blk.name, 'conv0'), (blk.name, 'conv1')]
        if spec.architecture == 'resnet':
            layers.append((blk.name, 'skip'))
    return layers


def trainable(params, spec: DSpec):
    """A pytree of bools like `params`: False for the weights and biases of the first `spec.freeze_layers` block
    layers (official --freezed: those layers are built with trainable=False, so no optimiser sees them); the
    epilogue (b4) and the label mapping always train."""
    frozen = set(block_layers(spec)[:spec.freeze_layers])
    return {name: {layer: jax.tree.map(lambda _, keep=(name, layer) not in frozen: keep, leaves)
                   for layer, leaves in sub.items()}
            for name, sub in params.items()}


def _mapping_kwargs(spec):
    return dict(z_dim=0, c_dim=spec.c_dim, w_dim=spec.cmap_dim, num_ws=None, w_avg_beta=None,
                **utils.thaw(spec.mapping_frozen))

#----------------------------------------------------------------------------

def d_init(key, spec: DSpec):
    """Returns (params, buffers); the D has no training-updated buffers, so buffers is {}."""
    keys = jax.random.split(key, len(spec.blocks) + 2)
    params = {}
    for blk, k in zip(spec.blocks, keys):
        k0, k1, k2, k3 = jax.random.split(k, 4)
        p = {}
        if blk.in_channels == 0 or spec.architecture == 'skip':
            p['fromrgb'] = conv_init(k0, spec.img_channels, blk.tmp_channels, 1)
        p['conv0'] = conv_init(k1, blk.tmp_channels, blk.tmp_channels, 3)
        p['conv1'] = conv_init(k2, blk.tmp_channels, blk.out_channels, 3)
        if spec.architecture == 'resnet':
            p['skip'] = conv_init(k3, blk.tmp_channels, blk.out_channels, 1, bias=False)
        params[blk.name] = p
    c4 = spec.channels_4
    kf, kc, kfc, ko = jax.random.split(keys[-2], 4)
    b4 = {}
    if spec.architecture == 'skip':
        b4['fromrgb'] = conv_init(kf, spec.img_channels, c4, 1)
    b4['conv'] = conv_init(kc, c4 + spec.mbstd_num_channels, c4, 3)
    b4['fc'] = fc_init(kfc, c4 * 16, c4)
    b4['out'] = fc_init(ko, c4, 1 if spec.cmap_dim == 0 else spec.cmap_dim)
    params['b4'] = b4
    if spec.c_dim > 0:
        params['mapping'], _ = mapping_init(keys[-1], **_mapping_kwargs(spec))
    return params, {}


def minibatch_std(x, group_size: Optional[int] = 4, num_channels: int = 1):
    """Appends the minibatch standard deviation as `num_channels` extra channels (NHWC).

    Groups: G = min(group_size, N); sample n belongs to group n mod (N/G), i.e. samples {m, m + N/G, ...} — the
    official reshape(G, -1, ...). N is the batch this function sees; the official code sees the per-GPU batch,
    so sharded training calls this per device (jax.shard_map) to keep the groups within a device."""
    n, h, w, c = x.shape
    g = min(group_size, n) if group_size is not None else n
    if n % g:
        raise ValueError(f'minibatch-std: batch {n} is not divisible by the group size {g}')
    f = num_channels
    y = x.reshape(g, n // g, h, w, f, c // f)                 # [G,n,H,W,F,c]
    y = y - jnp.mean(y, axis=0)
    y = jnp.mean(jnp.square(y), axis=0)                       # [n,H,W,F,c]
    y = jnp.sqrt(y + 1e-8)
    y = jnp.mean(y, axis=(1, 2, 4))                           # [n,F]
    y = jnp.tile(y, (g, 1))                                   # [N,F]
    y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, f))
    return jnp.concatenate([x, y], axis=-1)


def _d_block(p, x, img, *, f, blk, spec: DSpec, impl, dtype):
    """One DiscriminatorBlock (official networks_stylegan2.py): (x, img) -> (x, img) at half the resolution.
    `f` is the resampling filter (a concrete array: the FIR taps are unrolled)."""
    act, clamp = spec.activation, spec.conv_clamp
    x = x.astype(dtype) if x is not None else None
    if blk.in_channels == 0 or spec.architecture == 'skip':
        y = conv_apply(p['fromrgb'], img.astype(dtype), activation=act, conv_clamp=clamp, impl=impl)
        x = x + y if x is not None else y
        img = downsample2d(img, f, impl=impl) if spec.architecture == 'skip' else None
    if spec.architecture == 'resnet':
        y = conv_apply(p['skip'], x, down=2, resample_filter=f, gain=np.sqrt(0.5), impl=impl)
        x = conv_apply(p['conv0'], x, activation=act, conv_clamp=clamp, impl=impl)
        x = conv_apply(p['conv1'], x, activation=act, down=2, resample_filter=f, conv_clamp=clamp,
                       gain=np.sqrt(0.5), impl=impl)
        x = y + x
    else:
        x = conv_apply(p['conv0'], x, activation=act, conv_clamp=clamp, impl=impl)
        x = conv_apply(p['conv1'], x, activation=act, down=2, resample_filter=f, conv_clamp=clamp, impl=impl)
    return x, img


def d_apply(params, spec: DSpec, img, c=None, impl='fast', mbstd_fn=None, mixed_dtype=None, remat=False):
    """img [N, R, R, C] (NHWC, in [-1, 1]), c [N, c_dim] -> logits [N, 1] (float32)."""
    return d_activations(params, spec, img, c, impl=impl, mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype,
                         remat=remat)[0]


def d_activations(params, spec: DSpec, img, c=None, impl='fast', mbstd_fn=None, mixed_dtype=None, remat=False):
    """(logits, {'<block>.x': each block's output, 'cmap': the conditioning embedding of a conditional D}) of
    `d_apply`, for localising parity differences.

    `mbstd_fn` replaces `minibatch_std` (e.g. a shard_map'ed per-device version during training).
    `mixed_dtype` (jnp.bfloat16 / jnp.float16): compute dtype of the `use_fp16` blocks (the highest
    resolutions), as the official fp16 blocks on CUDA; the epilogue stays float32. None = float32 everywhere.
    `remat`: rematerialise each block (`jax.checkpoint`) under differentiation: only the blocks' outputs are
    kept for the backward pass (and for R1's double backward), the rest is recomputed; same values."""
    if img.ndim != 4 or img.shape[1:] != (spec.img_resolution, spec.img_resolution, spec.img_channels):
        raise ValueError(f'img must have shape [N, {spec.img_resolution}, {spec.img_resolution}, '
                         f'{spec.img_channels}] (NHWC), got {img.shape}')
    f = setup_filter(np.asarray(spec.resample_filter, np.float32))
    act, clamp = spec.activation, spec.conv_clamp
    acts = {}
    x = None
    img = img.astype(jnp.float32)
    for blk in spec.blocks:
        dtype = mixed_dtype if (mixed_dtype is not None and blk.use_fp16) else jnp.float32
        run_block = functools.partial(_d_block, f=f, blk=blk, spec=spec, impl=impl, dtype=dtype)
        if remat:
            run_block = jax.checkpoint(run_block)
        x, img = run_block(params[blk.name], x, img)
        acts[f'{blk.name}.x'] = x

    cmap = None
    if spec.c_dim > 0:
        if c is None or c.ndim != 2 or c.shape[1] != spec.c_dim:
            raise ValueError(f'c must have shape [N, {spec.c_dim}], got {None if c is None else c.shape}')
        cmap, _ = mapping_apply(params['mapping'], {}, None, c, **_mapping_kwargs(spec))
        acts['cmap'] = cmap

    # Epilogue (official DiscriminatorEpilogue), always float32.
    p = params['b4']
    x = x.astype(jnp.float32)
    if spec.architecture == 'skip':
        x = x + conv_apply(p['fromrgb'], img, activation=act, impl=impl)
    if spec.mbstd_num_channels > 0:
        x = (mbstd_fn or minibatch_std)(x, spec.mbstd_group_size, spec.mbstd_num_channels)
    x = conv_apply(p['conv'], x, activation=act, conv_clamp=clamp, impl=impl)
    # The fc weight expects the official NCHW flattening order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = fc_apply(p['fc'], x, activation=act)
    x = fc_apply(p['out'], x)
    if spec.cmap_dim > 0:
        x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / np.sqrt(spec.cmap_dim))
    return x, acts

#----------------------------------------------------------------------------
# Public API over a plain config dict (official Discriminator kwargs; `class_name` is accepted and checked).

CLASS_NAME = 'training.networks_stylegan2.Discriminator'


def spec(cfg) -> DSpec:
    cfg = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    class_name = cfg.pop('class_name', CLASS_NAME)
    if class_name != CLASS_NAME:
        raise ValueError(f'discriminator class_name must be {CLASS_NAME!r}, got {class_name!r}')
    for field in ('c_dim', 'img_resolution', 'img_channels'):
        if not isinstance(cfg.get(field), int) or cfg[field] < 0:
            raise ValueError(f'discriminator config field {field!r} must be a non-negative int, '
                             f'got {cfg.get(field)!r}')
    top = {k: cfg.pop(k) for k in ('c_dim', 'img_resolution', 'img_channels')}
    return d_spec(**top, **cfg)


def init(key, cfg):
    """(params, buffers) with official names (b<res>.*, b4.*, mapping.* for conditional D); buffers = {}."""
    return d_init(key, spec(cfg))


def apply(params, img, c, cfg, **kwargs):
    """D(img, c) -> logits [N, 1]; img NHWC in [-1, 1]."""
    return d_apply(params, spec(cfg), img, c, **kwargs)


def activations(params, img, c, cfg, **kwargs):
    """(logits, every block's output) of D(img, c): see d_activations."""
    return d_activations(params, spec(cfg), img, c, **kwargs)

"""The StyleGAN3 (T/R) and StyleGAN2 generators as pure functions: mapping + synthesis.

A generator config is a plain dict of the official constructor kwargs plus `arch`:
    {'arch': 'stylegan3', 'z_dim': 512, 'c_dim': 0, 'w_dim': 512, 'img_resolution': 1024, 'img_channels': 3,
     'mapping_kwargs': {'num_layers': 2}, 'channel_base': 32768, 'conv_kernel': 1, 'use_radial_filters': True,...}
`arch` may instead be given as the official `class_name` ('training.networks_stylegan3.Generator'), so an official
`init_kwargs` dict (or the golden `config_json`) is a valid config as is.

    params, buffers = init(key, cfg)
    img = apply(params, buffers, z, c, cfg, truncation_psi=0.7)              # [N, R, R, C] NHWC in ~[-1, 1]
    img, buffers = apply_update_emas(params, buffers, z, c, cfg)             # training: updated w_avg etc.

`params` are the trainable parameters, `buffers` the official non-trainable state (w_avg, magnitude_ema, SG3
input freqs/phases/transform, SG2 noise_const). Config-derived filters live in neither: they are recomputed.
"""

import dataclasses
from typing import Any, Dict

import jax

from sg3jax import utils
from sg3jax.networks import synthesis_sg2, synthesis_sg3
from sg3jax.networks.mapping import mapping_apply, mapping_init

ARCHS = {
    'stylegan3': 'training.networks_stylegan3.Generator',
    'stylegan2': 'training.networks_stylegan2.Generator',
}
_MAPPING_DEFAULTS = {
    # Official MappingNetwork defaults differ: StyleGAN3's has 2 layers, StyleGAN2's has 8.
    'stylegan3': dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998),
    'stylegan2': dict(num_layers=8, embed_features=None, layer_features=None, activation='lrelu',
                      lr_multiplier=0.01, w_avg_beta=0.998),
}


@dataclasses.dataclass(frozen=True)
class GSpec:
    arch: str
    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    mapping_frozen: Any     # utils.freeze of the mapping network options (mapping_kwargs thaws it)
    synthesis: Any          # synthesis_sg3.SynthesisSpec or synthesis_sg2.SynthesisSpec

    @property
    def num_ws(self):
        return self.synthesis.num_ws

    @property
    def mapping_kwargs(self) -> Dict[str, Any]:
        return dict(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                    **utils.thaw(self.mapping_frozen))


def normalize_config(cfg) -> Dict[str, Any]:
    """Plain dict with `arch` set (from `arch` or the official `class_name`); validates the top-level fields."""
    cfg = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    class_name = cfg.pop('class_name', None)
    arch = cfg.get('arch')
    if arch is None and class_name is not None:
        by_class = {v: k for k, v in ARCHS.items()}
        if class_name not in by_class:
            raise ValueError(f'generator class_name {class_name!r} is not one of {sorted(by_class)}')
        arch = by_class[class_name]
    if arch not in ARCHS:
        raise ValueError(f"generator config field 'arch' must be one of {sorted(ARCHS)}, got {arch!r}")
    cfg['arch'] = arch
    for field in ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels'):
        if not isinstance(cfg.get(field), int) or cfg[field] < 0:
            raise ValueError(f'generator config field {field!r} must be a non-negative int, got {cfg.get(field)!r}')
    return cfg


def spec(cfg) -> GSpec:
    """Static description of the network (all derived sizes, layer lists); cached per config."""
    cfg = normalize_config(cfg)
    return _spec_cached(cfg)


@utils.cache_by_value(maxsize=64)
def _spec_cached(cfg) -> GSpec:
    arch = cfg.pop('arch')
    mapping = {**_MAPPING_DEFAULTS[arch], **cfg.pop('mapping_kwargs', {})}
    unknown = set(mapping) - set(_MAPPING_DEFAULTS[arch])
    if unknown:
        raise ValueError(f'unknown mapping_kwargs option(s) {sorted(unknown)} for {arch}')
    top = {k: cfg.pop(k) for k in ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels')}
    module = synthesis_sg3 if arch == 'stylegan3' else synthesis_sg2
    syn = module.synthesis_spec(top['w_dim'], top['img_resolution'], top['img_channels'], **cfg)
    return GSpec(arch=arch, mapping_frozen=utils.freeze(mapping), synthesis=syn, **top)


def _synthesis_module(s: GSpec):
    return synthesis_sg3 if s.arch == 'stylegan3' else synthesis_sg2

#----------------------------------------------------------------------------

def init(key, cfg):
    """(params, buffers) = {'mapping': ..., 'synthesis': ...} each, with the official initialisation."""
    s = spec(cfg)
    k_map, k_syn = jax.random.split(key)
    mp, mb = mapping_init(k_map, **s.mapping_kwargs)
    sp, sb = _synthesis_module(s).synthesis_init(k_syn, s.synthesis)
    return {'mapping': mp, 'synthesis': sp}, {'mapping': mb, 'synthesis': sb}


def mapping(params, buffers, z, c, cfg, truncation_psi=1.0, truncation_cutoff=None):
    """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim].

    Truncation: ws[:, :cutoff] = w_avg + psi * (ws - w_avg), cutoff = num_ws when None."""
    return _mapping(params, buffers, z, c, cfg, truncation_psi, truncation_cutoff, update_emas=False)[0]


def mapping_update_emas(params, buffers, z, c, cfg, truncation_psi=1.0, truncation_cutoff=None):
    """(ws, buffers with w_avg moved toward this batch's mean w): the official mapping(..., update_emas=True)
    of training, which truncates toward the updated w_avg."""
    return _mapping(params, buffers, z, c, cfg, truncation_psi, truncation_cutoff, update_emas=True)


def _mapping(params, buffers, z, c, cfg, truncation_psi, truncation_cutoff, update_emas):
    s = spec(cfg)
    ws, mb = mapping_apply(params['mapping'], buffers['mapping'], z, c, truncation_psi=truncation_psi,
                           truncation_cutoff=truncation_cutoff, update_emas=update_emas, **s.mapping_kwargs)
    return ws, {**buffers, 'mapping': mb}


def synthesis(params, buffers, ws, cfg, noise_mode='const', noise_key=None, fused_modconv=None, transform=None,
              impl='fast', mixed_dtype=None, remat=False):
    """ws -> images [N, R, R, C] (NHWC).

    StyleGAN3: `transform` ([3,3] or [N,3,3]) overrides the input's transform buffer; noise options are ignored,
    as in the official code. StyleGAN2: `noise_mode` 'const' | 'random' (needs noise_key) | 'none',
    `fused_modconv` None = config default. `impl`: 'fast' or 'ref' (the official op order; slower).
    `mixed_dtype`: jnp.bfloat16 or jnp.float16 runs the top `num_fp16_res` resolutions in that dtype (mixed
    precision, official fp16 layers); None = float32 everywhere. `remat`: recompute each layer (SG3) or block
    (SG2) in the backward pass instead of keeping its internals (training memory; same values): True, or for
    StyleGAN3 what each layer keeps besides its input ('inputs' = True, 'masks', 'masks_and_convs':
    synthesis_sg3.REMAT_POLICIES)."""
    return _synthesis(params, buffers, ws, cfg, False, noise_mode, noise_key, fused_modconv, transform, impl,
                      mixed_dtype, remat)[0]


def synthesis_update_emas(params, buffers, ws, cfg, noise_mode='const', noise_key=None, fused_modconv=None,
                          transform=None, impl='fast', mixed_dtype=None, remat=False):
    """(images, buffers with StyleGAN3's magnitude_ema moved toward this batch's): the official
    synthesis(..., update_emas=True) of training. StyleGAN2 has no such buffer: its buffers come back as given."""
    return _synthesis(params, buffers, ws, cfg, True, noise_mode, noise_key, fused_modconv, transform, impl,
                      mixed_dtype, remat)


def _synthesis(params, buffers, ws, cfg, update_emas, noise_mode, noise_key, fused_modconv, transform, impl,
               mixed_dtype, remat):
    s = spec(cfg)
    if s.arch == 'stylegan3':
        img, sb = synthesis_sg3.synthesis_apply(params['synthesis'], buffers['synthesis'], ws, s.synthesis,
                                                update_emas=update_emas, transform=transform, impl=impl,
                                                mixed_dtype=mixed_dtype, remat=remat)
        return img, {**buffers, 'synthesis': sb}
    if transform is not None:
        raise ValueError('transform is a StyleGAN3 input option; StyleGAN2 has a constant input')
    if remat not in (False, True, 'inputs'):
        raise ValueError(f'remat={remat!r}: the remat policies are for StyleGAN3 layers; StyleGAN2 takes '
                         'remat=True (each block recomputed whole) or False')
    img = synthesis_sg2.synthesis_apply(params['synthesis'], buffers['synthesis'], ws, s.synthesis,
                                        noise_mode=noise_mode, noise_key=noise_key, fused_modconv=fused_modconv,
                                        impl=impl, mixed_dtype=mixed_dtype, remat=remat)
    return img, buffers


def apply(params, buffers, z, c, cfg, truncation_psi=1.0, truncation_cutoff=None, **kwargs):
    """G(z, c): mapping then synthesis -> images; `kwargs` are synthesis's."""
    ws = mapping(params, buffers, z, c, cfg, truncation_psi, truncation_cutoff)
    return synthesis(params, buffers, ws, cfg, **kwargs)


def apply_update_emas(params, buffers, z, c, cfg, truncation_psi=1.0, truncation_cutoff=None, **kwargs):
    """(images, updated buffers) of G(z, c) in training: mapping_update_emas, then synthesis_update_emas."""
    ws, buffers = mapping_update_emas(params, buffers, z, c, cfg, truncation_psi, truncation_cutoff)
    return synthesis_update_emas(params, buffers, ws, cfg, **kwargs)

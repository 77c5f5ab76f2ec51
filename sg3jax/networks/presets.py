"""G and D configs for the official training configurations, derived as the official `train.py` derives them.

    g_cfg, d_cfg = network_configs('stylegan3-r', img_resolution=1024, batch_size=32)

Everything the official command line fixes for a `--cfg` (class, mapping depth, channel base/max, R's 1x1 convs,
doubled channels and radial filters, magnitude_ema_beta from the batch size, conv_clamp 256, mbstd group) is
computed here in one place, so the training configs and the tools agree with each other and with NVIDIA's
pickles.
"""

from typing import Optional, Tuple

CFGS = ('stylegan3-t', 'stylegan3-r', 'stylegan2')


def network_configs(cfg: str, img_resolution: int, img_channels: int = 3, c_dim: int = 0,
                    batch_size: int = 32, cbase: int = 32768, cmax: int = 512, map_depth: Optional[int] = None,
                    mbstd_group: int = 4, freezed: int = 0, fp32: bool = False,
                    z_dim: int = 512, w_dim: int = 512) -> Tuple[dict, dict]:
    """(G config, D config) for `--cfg`; arguments carry the official flag names (--cbase, --cmax, --map-depth,
    --mbstd-group, --freezed, --fp32). `batch_size` matters for StyleGAN3's magnitude_ema_beta =
    0.5 ** (batch / 20k), i.e. a half-life of 20k images."""
    if cfg not in CFGS:
        raise ValueError(f'cfg must be one of {CFGS}, got {cfg!r}')
    if img_resolution < 8 or img_resolution & (img_resolution - 1):
        raise ValueError(f'img_resolution must be a power of two >= 8, got {img_resolution}')
    conv_clamp = None if fp32 else 256
    num_fp16_res = 0 if fp32 else 4
    g = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
             mapping_kwargs={'num_layers': (8 if cfg == 'stylegan2' else 2) if map_depth is None else map_depth},
             channel_base=cbase, channel_max=cmax, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp)
    if cfg == 'stylegan2':
        # Official: regular (non-grouped) convolutions for training, grouped for inference.
        g.update(arch='stylegan2', fused_modconv_default='inference_only')
    else:
        g.update(arch='stylegan3', magnitude_ema_beta=0.5 ** (batch_size / (20 * 1e3)))
        if cfg == 'stylegan3-r':
            g.update(conv_kernel=1, channel_base=cbase * 2, channel_max=cmax * 2, use_radial_filters=True)
    d = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture='resnet',
             channel_base=cbase, channel_max=cmax, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
             block_kwargs={'freeze_layers': freezed} if freezed else {}, mapping_kwargs={},
             epilogue_kwargs={'mbstd_group_size': mbstd_group})
    return g, d

r"""StyleGAN3-T (translation equivariant), the official `--cfg=stylegan3-t`.

AFHQv2 at 512x512 with the docs/configs.md settings (gamma 8.2, batch 32, x-flips; that row uses ADA), at batch 64:

  python -m sg3jax.train --config configs/stylegan3_t.py:preset=afhqv2-512,data=/data/afhqv2 \
      --workdir /runs/afhq --config.batch_size=64

FFHQ at 1024x1024 as in the paper (gamma 32.8, no augmentation); print the resolved config and exit:

  python -m sg3jax.train --config configs/stylegan3_t.py:preset=ffhq1024,data=/data/ffhq1024 \
      --workdir /runs/ffhq --dry_run

Arguments after the colon, comma separated: preset=NAME (PRESETS below), res=INT, data=PATH_OR_TFDS_NAME, cond,
mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart (the `python -m sg3jax.quickstart`
model: 16 px, class-conditional). Then any field with --config.FIELD=VALUE. The fields every architecture shares,
their meaning and official defaults are in sg3jax/training/config.py (shared_config); this file sets what differs.
"""

from sg3jax.training import config as config_lib

CFG = 'stylegan3-t'

# The official train.py for --cfg=stylegan3-t: G learning rate 0.0025 and a 2-layer mapping (its "varies"
# defaults); no style mixing, no path length, no D-input blur (the shared defaults). The networks
# (networks/presets.py): the StyleGAN3 generator with 3x3 convolutions and magnitude_ema_beta
# 0.5 ** (batch / 20k), and the StyleGAN2 resnet discriminator.
ARCH = dict(glr=0.0025, map_depth=2)

_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files'

# docs/configs.md, "Configurations used in StyleGAN3 paper" (8 GPUs). A row without --aug keeps the official
# default, ada. The MetFaces rows fine-tune NVIDIA's FFHQ(-U) pickles (download them first: --config.resume
# takes a local path).
PRESETS = {
    'ffhq1024': dict(resolution=1024, batch_size=32, gamma=32.8, mirror=True, aug='noaug'),
    'ffhqu1024': dict(resolution=1024, batch_size=32, gamma=32.8, mirror=True, aug='noaug'),
    'ffhqu256': dict(resolution=256, batch_size=64, gamma=1.0, mirror=True, aug='noaug', cbase=16384, dlr=0.0025),
    'afhqv2-512': dict(resolution=512, batch_size=32, gamma=8.2, mirror=True, aug='ada'),
    'metfaces-1024': dict(resolution=1024, batch_size=32, gamma=6.6, mirror=True, aug='ada', kimg=5000.0, snap=10,
                          resume=f'{_NGC}/stylegan3-t-ffhq-1024x1024.pkl'),
    'metfacesu-1024': dict(resolution=1024, batch_size=32, gamma=16.4, mirror=True, aug='ada', kimg=5000.0,
                           snap=10, resume=f'{_NGC}/stylegan3-t-ffhqu-1024x1024.pkl'),
}


def get_config(arg=None):
    return config_lib.make_config(CFG, arg, ARCH, PRESETS)

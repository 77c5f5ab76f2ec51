r"""StyleGAN2, the official `--cfg=stylegan2`: 8-layer mapping, style mixing (0.9), path length
regularisation (weight 2, lazily every 4 minibatches), G learning rate 0.002.

FFHQ at 1024x1024 as in the StyleGAN3 paper's baseline (gamma 10, batch 32, x-flips, no augmentation):

  python -m sg3jax.train --config configs/stylegan2.py:preset=ffhq1024,data=/data/ffhq1024 \
      --workdir /runs/ffhq-sg2

The StyleGAN2-ADA `paper256` configuration on a TFDS dataset (with ADA, as that row):

  python -m sg3jax.train --config configs/stylegan2.py:preset=paper256,data=my_tfds_name \
      --workdir /runs/p256 --config.data_dir=/data/tfds

Arguments after the colon, comma separated: preset=NAME (PRESETS below), res=INT, data=PATH_OR_TFDS_NAME, cond,
mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart (the `python -m sg3jax.quickstart`
model: 16 px, class-conditional). Then any field with --config.FIELD=VALUE. The fields every architecture shares,
their meaning and official defaults are in sg3jax/training/config.py (shared_config); this file sets what differs.
"""

from sg3jax.training import config as config_lib

CFG = 'stylegan2'

# The official train.py for --cfg=stylegan2: G learning rate 0.002 and an 8-layer mapping (its "varies"
# defaults), style mixing with probability 0.9, path-length regularisation of weight 2 in a lazy G phase every 4
# minibatches. The networks (networks/presets.py): the StyleGAN2 generator, trained with regular rather than
# grouped convolutions (fused_modconv_default='inference_only'), and the StyleGAN2 resnet discriminator.
ARCH = dict(glr=0.002, map_depth=8, style_mixing_prob=0.9, pl_weight=2.0, G_reg_interval=4)

_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files'

# docs/configs.md, "Configurations used in StyleGAN3 paper" (its StyleGAN2 column) and "Old StyleGAN2-ADA
# configurations" (paper256/512/1024), 8 GPUs. A row without --aug keeps the official default, ada. The MetFaces
# rows fine-tune NVIDIA's FFHQ(-U) pickles (download them first: --config.resume takes a local path).
PRESETS = {
    'ffhq1024': dict(resolution=1024, batch_size=32, gamma=10.0, mirror=True, aug='noaug'),
    'ffhqu1024': dict(resolution=1024, batch_size=32, gamma=10.0, mirror=True, aug='noaug'),
    'ffhqu256': dict(resolution=256, batch_size=64, gamma=1.0, mirror=True, aug='noaug', cbase=16384, dlr=0.0025,
                     glr=0.0025, mbstd_group=8),
    'afhqv2-512': dict(resolution=512, batch_size=32, gamma=5.0, mirror=True, aug='ada'),
    'metfaces-1024': dict(resolution=1024, batch_size=32, gamma=5.0, mirror=True, aug='ada', kimg=5000.0, snap=10,
                          resume=f'{_NGC}/stylegan2-ffhq-1024x1024.pkl'),
    'metfacesu-1024': dict(resolution=1024, batch_size=32, gamma=10.0, mirror=True, aug='ada', kimg=5000.0,
                           snap=10, resume=f'{_NGC}/stylegan2-ffhqu-1024x1024.pkl'),
    'paper256': dict(resolution=256, batch_size=64, gamma=1.0, cbase=16384, mbstd_group=8, aug='ada', glr=0.0025,
                     dlr=0.0025),
    'paper512': dict(resolution=512, batch_size=64, gamma=0.5, mbstd_group=8, aug='ada', glr=0.0025, dlr=0.0025),
    'paper1024': dict(resolution=1024, batch_size=32, gamma=2.0, aug='ada'),
}


def get_config(arg=None):
    return config_lib.make_config(CFG, arg, ARCH, PRESETS)

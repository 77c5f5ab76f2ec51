r"""StyleGAN3-R (translation and rotation equivariant), the official `--cfg=stylegan3-r`: 1x1 convolutions,
doubled feature maps, radial filters, and a D-input blur (sigma 10) faded out over the first batch*200/32 kimg.

AFHQv2 at 512x512 with the docs/configs.md settings (gamma 16.4, batch 32, x-flips; that row uses ADA):

  python -m sg3jax.train --config configs/stylegan3_r.py:preset=afhqv2-512,data=/data/afhqv2 \
      --workdir /runs/afhq-r

Your own 256x256 dataset (docs/configs.md recommends gamma 2 at 256x256, batch 32):

  python -m sg3jax.train --config configs/stylegan3_r.py:res=256,mirror,data=/data/mine256 \
      --workdir /runs/mine --config.gamma=2

Arguments after the colon, comma separated: preset=NAME (PRESETS below), res=INT, data=PATH_OR_TFDS_NAME, cond,
mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart (the `python -m sg3jax.quickstart`
model: 16 px, class-conditional). Then any field with --config.FIELD=VALUE. The fields every architecture shares,
their meaning and official defaults are in sg3jax/training/config.py (shared_config); this file sets what differs.
"""

from sg3jax.training import config as config_lib

CFG = 'stylegan3-r'

# The official train.py for --cfg=stylegan3-r: StyleGAN3-T's settings plus a Gaussian blur of D's input, sigma 10
# at the start, faded out linearly over batch * 200 / 32 kimg (blur_fade_kimg, derived by config.resolve; none
# when fine-tuning). The networks (networks/presets.py): 1x1 convolutions, radial (jinc) filters, and twice
# the G feature maps (cbase and cmax doubled for G only).
ARCH = dict(glr=0.0025, map_depth=2, blur_init_sigma=10.0)

_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files'

# docs/configs.md, "Configurations used in StyleGAN3 paper" (8 GPUs). A row without --aug keeps the official
# default, ada. The MetFaces rows fine-tune NVIDIA's FFHQ(-U) pickles (download them first: --config.resume
# takes a local path).
PRESETS = {
    'ffhq1024': dict(resolution=1024, batch_size=32, gamma=32.8, mirror=True, aug='noaug'),
    'ffhqu1024': dict(resolution=1024, batch_size=32, gamma=32.8, mirror=True, aug='noaug'),
    'ffhqu256': dict(resolution=256, batch_size=64, gamma=1.0, mirror=True, aug='noaug', cbase=16384, dlr=0.0025),
    'afhqv2-512': dict(resolution=512, batch_size=32, gamma=16.4, mirror=True, aug='ada'),
    'metfaces-1024': dict(resolution=1024, batch_size=32, gamma=3.3, mirror=True, aug='ada', kimg=5000.0, snap=10,
                          resume=f'{_NGC}/stylegan3-r-ffhq-1024x1024.pkl'),
    'metfacesu-1024': dict(resolution=1024, batch_size=32, gamma=6.6, mirror=True, aug='ada', kimg=5000.0,
                           snap=10, resume=f'{_NGC}/stylegan3-r-ffhqu-1024x1024.pkl'),
}


def get_config(arg=None):
    return config_lib.make_config(CFG, arg, ARCH, PRESETS)

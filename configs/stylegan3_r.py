r"""StyleGAN3-R (translation and rotation equivariant), the official `--cfg=stylegan3-r`: 1x1 convolutions,
doubled feature maps, radial filters, and a D-input blur (sigma 10) faded out over the first batch*200/32 kimg.

AFHQv2 at 512x512 with the docs/configs.md settings (gamma 16.4, batch 32, x-flips; that row uses ADA):

  python -m sg3jax.train --config configs/stylegan3_r.py:preset=afhqv2-512,data=/data/afhqv2 \
      --workdir /runs/afhq-r

Your own 256x256 dataset (docs/configs.md recommends gamma 2 at 256x256, batch 32):

  python -m sg3jax.train --config configs/stylegan3_r.py:res=256,mirror,data=/data/mine256 \
      --workdir /runs/mine --config.gamma=2

Arguments after the colon, comma separated: preset=NAME (sg3jax.training.config.PRESETS), res=INT,
data=PATH_OR_TFDS_NAME, cond, mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart
(the `python -m sg3jax.quickstart` model: 16 px, class-conditional). Then any field
with --config.FIELD=VALUE; the fields, their meaning and official defaults are in sg3jax/training/config.py.
"""

from sg3jax.training import config as config_lib


def get_config(arg=None):
    return config_lib.get_config('stylegan3-r', arg)

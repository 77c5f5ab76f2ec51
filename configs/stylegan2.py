r"""StyleGAN2, the official `--cfg=stylegan2`: 8-layer mapping, style mixing (0.9), path length
regularisation (weight 2, lazily every 4 minibatches), G learning rate 0.002.

FFHQ at 1024x1024 as in the StyleGAN3 paper's baseline (gamma 10, batch 32, x-flips, no augmentation):

  python -m sg3jax.train --config configs/stylegan2.py:preset=ffhq1024,data=/data/ffhq1024 \
      --workdir /runs/ffhq-sg2

The StyleGAN2-ADA `paper256` configuration on a TFDS dataset (with ADA, as that row):

  python -m sg3jax.train --config configs/stylegan2.py:preset=paper256,data=my_tfds_name \
      --workdir /runs/p256 --config.data_dir=/data/tfds

Arguments after the colon, comma separated: preset=NAME (sg3jax.training.config.PRESETS), res=INT,
data=PATH_OR_TFDS_NAME, cond, mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart
(the `python -m sg3jax.quickstart` model: 16 px, class-conditional). Then any field
with --config.FIELD=VALUE; the fields, their meaning and official defaults are in sg3jax/training/config.py.
"""

from sg3jax.training import config as config_lib


def get_config(arg=None):
    return config_lib.get_config('stylegan2', arg)

r"""StyleGAN3-T (translation equivariant), the official `--cfg=stylegan3-t`.

AFHQv2 at 512x512 with the docs/configs.md settings (gamma 8.2, batch 32, x-flips; that row uses ADA), at batch 64:

  python -m sg3jax.train --config configs/stylegan3_t.py:preset=afhqv2-512,data=/data/afhqv2 \
      --workdir /runs/afhq --config.batch_size=64

FFHQ at 1024x1024 as in the paper (gamma 32.8, no augmentation); print the resolved config and exit:

  python -m sg3jax.train --config configs/stylegan3_t.py:preset=ffhq1024,data=/data/ffhq1024 \
      --workdir /runs/ffhq --dry_run

Arguments after the colon, comma separated: preset=NAME (sg3jax.training.config.PRESETS), res=INT,
data=PATH_OR_TFDS_NAME, cond, mirror, tiny (a model of a few seconds, for tests and smoke runs), quickstart
(the `python -m sg3jax.quickstart` model: 16 px, class-conditional). Then any field
with --config.FIELD=VALUE; the fields, their meaning and official defaults are in sg3jax/training/config.py.
"""

from sg3jax.training import config as config_lib


def get_config(arg=None):
    return config_lib.get_config('stylegan3-t', arg)

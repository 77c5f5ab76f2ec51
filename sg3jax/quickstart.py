"""Quickstart: train a small class-conditional StyleGAN on real images, on CPU, with nothing to download.

    python -m sg3jax.quickstart                                  # into runs/quickstart
    python -m sg3jax.quickstart --cfg stylegan3-t --kimg 5 --workdir /tmp/qs

The default network is StyleGAN2: on a 2-core CPU it trains this config at about 8 s/kimg, so the 40 kimg run
takes about six minutes. StyleGAN3's alias-free layers run every nonlinearity at twice the sampling rate on a
padded grid, and the same config trains at about 106 s/kimg there (README, Quickstart), so `--cfg stylegan3-t`
needs a small --kimg or an accelerator.

1. Dataset: scikit-learn's copy of the UCI handwritten digits (1,797 images of 8x8 pixels, 17 grey levels, labels
   0-9; the file installs with scikit-learn), upsampled to 16x16 and written with the dataset tool's writer to
   WORKDIR/digits16 (skipped when it is already there).
2. Training: the ordinary trainer on `configs/<cfg>.py:quickstart` (sg3jax.training.config.apply_quickstart), so
   WORKDIR is a normal run directory: `fakes_init.png`, then `fakesKKKKKK.png` grids (one row per digit class,
   rendered with G_ema from fixed latents) every 5 kimg, `stats.jsonl`, TensorBoard logs, Orbax checkpoints and
   `network-snapshot-KKKKKK/` exports for the sampling tools. Re-running resumes.

The equivalent trainer command is printed before training starts.
"""

import argparse
import pathlib
import sys

import jax
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from sg3jax import train as train_cli
from sg3jax.data import open_dataset
from sg3jax.data.writer import write_dataset
from sg3jax.training import config as config_lib
from sg3jax.training import loop

RESOLUTION = 16


def digits_examples(resolution=RESOLUTION):
    """scikit-learn's digits as dataset-writer examples: uint8 [R, R, 1] images (white strokes on black), int
    labels. 8x8 -> RxR with bicubic resampling: the 17 grey levels (0-16) scale to 0-255 first."""
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        img = np.rint(img * (255 / 16)).astype(np.uint8)
        img = np.asarray(Image.fromarray(img, 'L').resize((resolution, resolution), Image.BICUBIC))
        yield {'image': img[:, :, None], 'label': int(label), 'filename': f'sklearn-digits/{i:04d}'}


def make_digits_dataset(dest, resolution=RESOLUTION):
    """Writes the digits dataset to `dest` (atomically) unless a complete one is already there."""
    dest = pathlib.Path(dest)
    if dest.exists():
        ds = open_dataset(str(dest))
        if ds.resolution != resolution or ds.label_dim != 10:
            raise ValueError(f'{dest} exists but is not the {resolution}x{resolution} digits dataset '
                             f'({ds.resolution}x{ds.resolution}, label_dim {ds.label_dim}); remove it')
        return len(ds)
    return write_dataset(str(dest), digits_examples(resolution), resolution=resolution, num_channels=1,
                         label_kind='class', label_dim=10,
                         metadata={'source': 'sklearn.datasets.load_digits (UCI optical recognition of '
                                             'handwritten digits), bicubic 8x8 -> 16x16'})


def quickstart_config(cfg, data, kimg=None):
    config = config_lib.get_config(cfg, f'quickstart,data={data}')
    if kimg is not None:
        config.kimg = float(kimg)
    return config


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python -m sg3jax.quickstart', description=__doc__.split('\n\n')[0])
    p.add_argument('--workdir', default='runs/quickstart', help='run directory (default: runs/quickstart)')
    p.add_argument('--cfg', default='stylegan2', choices=sorted(config_lib.CONFIG_FILES),
                   help='network (default: stylegan2, the one that trains in minutes on a CPU)')
    p.add_argument('--kimg', type=float, default=None, help='training length in thousands of images (default: '
                                                            'the quickstart config, 40)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    data = workdir / f'digits{RESOLUTION}'
    workdir.mkdir(parents=True, exist_ok=True)
    n = make_digits_dataset(data)
    print(f'dataset: {n} handwritten digits ({RESOLUTION}x{RESOLUTION}, 10 classes) in {data}')
    config = quickstart_config(args.cfg, str(data), args.kimg)
    print('training; the same run from the trainer:\n'
          f'  python -m sg3jax.train --config configs/{config_lib.CONFIG_FILES[args.cfg]}:quickstart,data={data} '
          f'--workdir {workdir}'
          + (f' --config.kimg={args.kimg:g}' if args.kimg is not None else ''))
    print(f'watch {workdir}/fakes*.png: one row per digit 0-9; blobs at first, digits after a few kimg')

    c_dim, img_channels = train_cli.dataset_properties(config)
    loop.train(config, workdir, make_data=train_cli.make_data_fn(config), c_dim=c_dim,
               img_channels=img_channels)
    print(f'done: samples in {workdir}/fakes*.png; generator exports in {workdir}/network-snapshot-*; '
          f'{jax.device_count()} device(s) used')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Converts images into a dataset for sg3jax training (official dataset_tool.py flags).

    python -m sg3jax.dataset_tool --source ~/downloads/ffhq --dest ~/datasets/ffhq256 --resolution 256x256
    python -m sg3jax.dataset_tool --source afhqv2.zip --dest ~/datasets/afhqv2-512 --resolution 512x512 \
        --transform center-crop --skip-bad

--source: a folder of images (searched recursively), a .zip of images, an official StyleGAN3 dataset zip or folder
(class labels from its dataset.json), or tfds:NAME (train split of a prepared TFDS dataset). --dest: a new
directory; it is written atomically (complete, or not at all). Bad input stops with `error: <file>: <problem>`
(exit status 2) unless --skip-bad, which leaves such images out and lists them. The format is described in
sg3jax/data/writer.py.
"""

import argparse
import sys

from sg3jax.data import make_dataset
from sg3jax.data import transforms
from sg3jax.data.errors import DatasetError


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python -m sg3jax.dataset_tool', description=__doc__.split('\n\n')[0])
    p.add_argument('--source', required=True, metavar='PATH', help='image folder, .zip, or tfds:NAME')
    p.add_argument('--dest', required=True, metavar='PATH', help='output dataset directory (must not exist or be '
                                                                 'empty)')
    p.add_argument('--max-images', type=int, default=None, metavar='N', help='output at most N images')
    p.add_argument('--transform', choices=transforms.TRANSFORMS, default=None, help='input crop/resize mode')
    p.add_argument('--resolution', default=None, metavar='WxH', help="output resolution, e.g. '256x256'")
    p.add_argument('--skip-bad', action='store_true', help='leave out unreadable or mismatching images (and '
                                                           'report them) instead of stopping')
    p.add_argument('--data-dir', default=None, metavar='PATH', help='TFDS data_dir for --source tfds:NAME')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = make_dataset.convert_dataset(args.source, args.dest, max_images=args.max_images,
                                          transform=args.transform, resolution=args.resolution,
                                          skip_bad=args.skip_bad, data_dir=args.data_dir,
                                          progress=True)
    except DatasetError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for item in summary['skipped']:
        print(f'skipped {item["error"]}')
    if summary['dropped']:
        print(f'dropped {len(summary["dropped"])} images smaller than --resolution for --transform '
              f'center-crop-wide (the official tool drops them too)')
    r = summary['resolution']
    print(f'wrote {summary["num_images"]} images ({r}x{r}, {summary["num_channels"]} channels, label_dim '
          f'{summary["label_dim"]}) to {summary["dest"]}'
          + (f'; skipped {len(summary["skipped"])}' if summary['skipped'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The dataset tool's work (official dataset_tool.py `convert_dataset`): read a source, crop/resize, check that
every image agrees, write the dataset. Bad input stops with one DatasetError naming the file, or, with
skip_bad, is left out and reported."""

import os

from tqdm import tqdm

from sg3jax.data import sources as sources_lib
from sg3jax.data import transforms as transforms_lib
from sg3jax.data import writer as writer_lib
from sg3jax.data.errors import DatasetError

_CHANNEL_NAMES = {1: 'grayscale', 3: 'RGB'}


def _examples(source, transform_fn, *, max_images, skip_bad, report, progress):
    """Yields {'image', 'label', 'filename'} for each usable image, in source order. The first written image fixes
    the size and channel count every other image must have (official rule; with --resolution every transformed
    image already has the one size, checked before reading)."""
    names = source['names']
    total = len(names) if max_images is None else min(len(names), max_images)
    ref = None                       # (name, height, width, channels) of the first written image
    written = 0
    with tqdm(total=total, unit='img', disable=not progress, dynamic_ncols=True) as bar:
        for name in names:
            if written == total:
                break
            try:
                img, label = source['load'](name)
                img = transform_fn(img)
                if img is None:
                    report['dropped'].append(name)
                    bar.set_postfix(dropped=len(report['dropped']), skipped=len(report['skipped']))
                    continue
                h, w, c = img.shape
                if ref is None:
                    transforms_lib.check_square_power_of_two((w, h), name)
                if ref is not None and (h, w) != ref[1:3]:
                    raise DatasetError(
                        f'{name}: image is {w}x{h} but {ref[0]} is {ref[2]}x{ref[1]}; all images must have one size '
                        f'(use --resolution WxH, with --transform center-crop for non-square images)')
                if ref is not None and c != ref[3]:
                    raise DatasetError(
                        f'{name}: image is {_CHANNEL_NAMES[c]} but {ref[0]} is {_CHANNEL_NAMES[ref[3]]}; all '
                        f'images must have the same channels (convert them all to RGB or all to grayscale)')
            except DatasetError as e:
                if not skip_bad:
                    raise
                report['skipped'].append({'file': name, 'error': str(e)})
                bar.set_postfix(dropped=len(report['dropped']), skipped=len(report['skipped']))
                continue
            if ref is None:
                ref = (name, h, w, c)
            written += 1
            bar.update(1)
            yield {'image': img, 'label': label, 'filename': name}


def convert_dataset(
    source,                     # image folder, .zip, official dataset zip/folder (dataset.json), or 'tfds:NAME'
    dest,                       # new dataset directory (must not exist, or be empty)
    *,
    max_images  = None,         # write at most this many images (official --max-images)
    transform   = None,         # None | 'center-crop' | 'center-crop-wide' (official --transform)
    resolution  = None,         # (width, height) or 'WxH' (official --resolution)
    skip_bad    = False,        # leave out bad images and report them, instead of stopping at the first
    progress    = True,         # tqdm progress bar on stderr
    data_dir    = None,         # TFDS data_dir for 'tfds:NAME'
    shard_bytes = writer_lib.SHARD_BYTES,   # ArrayRecord file size target
):
    """Converts `source` into a dataset at `dest` (format: writer.py). Returns a summary dict:
    {'dest', 'num_images', 'resolution', 'num_channels', 'label_dim', 'skipped': [{'file', 'error'}],
    'dropped': [file]} (dropped = too small for center-crop-wide, which the official tool also leaves out)."""
    if isinstance(resolution, str):
        resolution = transforms_lib.parse_resolution(resolution)
    if max_images is not None and max_images < 1:
        raise DatasetError(f'--max-images {max_images}: must be at least 1')
    transform_fn = transforms_lib.make_transform(transform, resolution)
    dest = writer_lib.check_dest(dest)      # refuse before reading a single image
    report = {'skipped': [], 'dropped': []}
    with sources_lib.open_source(source, data_dir=data_dir) as src:
        if not src['names']:
            raise DatasetError(f'--source {source}: no images found')
        examples = _examples(src, transform_fn, max_images=max_images, skip_bad=skip_bad, report=report,
                             progress=progress)
        first = next(examples, None)
        if first is None:
            raise DatasetError(f'--source {source}: no usable images ({len(report["skipped"])} skipped, '
                               f'{len(report["dropped"])} too small for --transform {transform})'
                               + (f'; first problem: {report["skipped"][0]["error"]}' if report['skipped'] else ''))
        res, _, channels = first['image'].shape

        def chained():
            yield first
            yield from examples

        metadata = {'source': source if str(source).startswith('tfds:') else os.path.abspath(source),
                    'transform': transform, 'requested_resolution': list(resolution) if resolution else None,
                    'max_images': max_images, 'skipped': report['skipped'], 'dropped': report['dropped']}
        # The metadata dict is filled while the examples stream; write_dataset serialises it at the end.
        n = writer_lib.write_dataset(dest, chained(), resolution=res, num_channels=channels,
                                     label_kind=src['label_kind'], label_dim=src['label_dim'], metadata=metadata,
                                     shard_bytes=shard_bytes)
    return {'dest': dest, 'num_images': n, 'resolution': res, 'num_channels': channels,
            'label_dim': src['label_dim'], 'skipped': report['skipped'], 'dropped': report['dropped']}

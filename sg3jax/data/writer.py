"""Writing a dataset: validated images (and labels) -> a TFDS ArrayRecord directory, written atomically.

On-disk format (readable with `tfds.builder_from_directory(dest).as_data_source('train')`, no TensorFlow):
    dest/
      NAME-train.array_record-00000-of-0000N   one record per image, a tf.Example with
                                                 'image':    uint8 [R, R, C], stored raw (Tensor, bytes encoding)
                                                 'label':    ClassLabel or float32 [D] (only when labelled)
                                                 'filename': the source path of the image
      dataset_info.json, features.json           TFDS metadata: shapes, label classes, split sizes
      metadata.json                              resolution, num_channels, label_dim, source, flags, skipped files

Pixels are stored raw rather than as PNG: decoding is then a memcpy, so a host's few cores keep up with any
number of accelerators, and the size equals the official tool's uncompressed PNGs (compress_level=0). Records are
uncompressed with group_size 1 so each image is one random read (TFDS's own ArrayRecord setting, without the
default brotli, which would cost CPU and save nothing on noisy pixels).

Atomicity: everything goes to a hidden `.DEST.tmp-PID` folder beside dest, is read back, then renamed to dest in
one step; any error (or Ctrl-C) removes the folder, so dest is either complete or absent. A failed write (a full
disk) is a DatasetError naming dest.
"""

import contextlib
import itertools
import os
import re
import shutil

import numpy as np

from sg3jax.data.errors import DatasetError

SHARD_BYTES = 1 << 30           # ~1 GiB files: few enough handles at 1024 px, and each is random-access anyway
FORMAT_VERSION = 1
_WRITER_OPTIONS = 'group_size:1,uncompressed'


def check_dest(dest):
    """Refuses what the atomic rename cannot take or would destroy; returns the absolute path."""
    dest = os.path.abspath(os.fspath(dest))
    if dest.lower().endswith('.zip'):
        raise DatasetError(f'--dest {dest}: the output is a dataset directory (TFDS ArrayRecord), not a zip; '
                           f'give a directory path')
    if os.path.isfile(dest):
        raise DatasetError(f'--dest {dest}: a file with that name exists')
    if os.path.isdir(dest) and os.listdir(dest):
        raise DatasetError(f'--dest {dest}: the directory exists and is not empty; choose a new path or delete it')
    return dest


@contextlib.contextmanager
def atomic_directory(dest):
    """Yields a fresh temporary directory beside `dest` (same filesystem, so the final rename is atomic) that
    becomes `dest` when the block succeeds and is deleted when it fails."""
    dest = check_dest(dest)
    parent, base = os.path.split(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f'.{base}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)       # a leftover of a killed run with the same pid
    os.mkdir(tmp)
    try:
        yield tmp
        check_dest(dest)                          # someone may have filled dest while we were writing
        if os.path.isdir(dest):
            os.rmdir(dest)                        # empty (checked): rename cannot replace a directory otherwise
        os.rename(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, RuntimeError)):
            # A full disk or a quota (ArrayRecord reports its write failures as RuntimeError): one error naming
            # the destination, not the temporary folder.
            raise DatasetError(f'--dest {dest}: writing the dataset failed ({e}); nothing was written') from e
        raise


def dataset_name(dest):
    """TFDS name for the files: the dest folder name in snake_case (TFDS names are [a-z][a-z0-9_]*)."""
    name = re.sub(r'[^a-z0-9_]+', '_', os.path.basename(os.path.abspath(dest)).lower()).strip('_')
    name = re.sub(r'^[^a-z]+', '', name)
    return name or 'images'


def make_features(resolution, num_channels, label_kind=None, label_dim=0):
    import tensorflow_datasets as tfds    # lazily: see the package docstring
    features = {
        'image': tfds.features.Tensor(shape=(resolution, resolution, num_channels), dtype=np.uint8,
                                      encoding='bytes'),
        'filename': tfds.features.Text(),
    }
    if label_kind == 'class':
        features['label'] = tfds.features.ClassLabel(num_classes=label_dim)
    elif label_kind == 'vector':
        features['label'] = tfds.features.Tensor(shape=(label_dim,), dtype=np.float32)
    return tfds.features.FeaturesDict(features)


def write_dataset(dest, examples, *, resolution, num_channels, label_kind=None, label_dim=0, metadata=None,
                  shard_bytes=SHARD_BYTES):
    """Writes `examples` (dicts {'image': uint8 [R, R, C], 'label': int | [float] (labelled only), 'filename'})
    atomically as a one-split ('train') TFDS ArrayRecord dataset at `dest`. Returns the number of images."""
    import tensorflow_datasets as tfds    # lazily: see the package docstring
    from array_record.python import array_record_module

    features = make_features(resolution, num_channels, label_kind, label_dim)
    name = dataset_name(dest)
    per_shard = max(1, shard_bytes // (resolution * resolution * num_channels))
    with atomic_directory(dest) as tmp:
        lengths, first = [], None
        examples = iter(examples)
        while True:
            shard = itertools.islice(examples, per_shard)
            head = next(shard, None)
            if head is None:
                break
            writer = array_record_module.ArrayRecordWriter(
                os.path.join(tmp, f'{name}-train.array_record-{len(lengths):05d}.partial'), _WRITER_OPTIONS)
            n = 0
            try:
                for ex in itertools.chain([head], shard):
                    record = {'image': ex['image'], 'filename': ex.get('filename', '')}
                    if label_kind:
                        record['label'] = ex['label']
                    writer.write(features.serialize_example(record))
                    if first is None:
                        first = np.array(ex['image'])
                    n += 1
            finally:
                writer.close()
            lengths.append(n)
        if not lengths:
            raise DatasetError('no images to write')
        # The shard count is known only now (skipped images); TFDS wants it in every file name.
        for i in range(len(lengths)):
            os.rename(os.path.join(tmp, f'{name}-train.array_record-{i:05d}.partial'),
                      os.path.join(tmp, f'{name}-train.array_record-{i:05d}-of-{len(lengths):05d}'))
        num_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        split = tfds.core.SplitInfo(name='train', shard_lengths=lengths, num_bytes=num_bytes, filename_template=None)
        meta = dict(format='sg3jax-dataset', format_version=FORMAT_VERSION, num_images=sum(lengths),
                    resolution=resolution, num_channels=num_channels, label_kind=label_kind, label_dim=label_dim)
        meta.update(metadata or {})
        tfds.folder_dataset.write_metadata(
            data_dir=tmp, features=features, split_infos=[split], check_data=False,
            description='Images written by sg3jax.dataset_tool (StyleGAN3 in JAX).',
            metadata=tfds.core.MetadataDict(meta))
        # Read the files back before they become visible: record counts and the first image must survive.
        # (Directly, not through tfds.builder_from_directory, which tfds.testing.mock_data replaces.)
        shards = sorted(f for f in os.listdir(tmp) if '.array_record-' in f)
        counts = []
        for i, f in enumerate(shards):
            reader = array_record_module.ArrayRecordReader(os.path.join(tmp, f))
            counts.append(reader.num_records())
            if i == 0:
                back = features.deserialize_example_np(reader.read([0])[0])['image']
            reader.close()
        if counts != lengths or not np.array_equal(back, first):
            raise DatasetError(f'{dest}: the written dataset does not read back correctly')
    return sum(lengths)

"""Random access to a training set: a dataset made by `sg3jax.dataset_tool` (a TFDS ArrayRecord directory) or a
named TFDS dataset, both read through `tfds.data_source` (no TensorFlow needed).

    ds = open_dataset('/data/ffhq256')          # or open_dataset('cifar10', data_dir=...)
    ds.num_images, ds.resolution, ds.num_channels, ds.label_dim, ds.has_labels
    img, c = ds[i]                              # uint8 [H, W, C], float32 [label_dim] (one-hot for classes)

Feature convention (what the dataset tool writes, and what TFDS image datasets use): 'image' holds the pixels
(uint8 [R, R, C], C = 1 or 3); 'label' is optional, a ClassLabel (one-hot `c`, label_dim = num_classes, as the
official dataset.py) or a float vector (used as `c` directly).
"""

import os

import numpy as np

from sg3jax.data.errors import DatasetError

IMAGE_KEY, LABEL_KEY = 'image', 'label'


def _describe(features, where):
    """TFDS features -> {'image_key', 'image_shape', 'label_key', 'label_kind', 'label_dim'}."""
    import tensorflow_datasets as tfds    # lazily: see the package docstring
    keys = list(features.keys()) if hasattr(features, 'keys') else []
    if IMAGE_KEY not in keys:
        raise DatasetError(f'{where}: no {IMAGE_KEY!r} feature (features: {", ".join(keys) or "none"}); the '
                           f'pipeline reads images from {IMAGE_KEY!r}')
    image = features[IMAGE_KEY]
    if np.dtype(image.np_dtype) != np.uint8 or len(image.shape) not in (2, 3):
        raise DatasetError(f'{where}: {IMAGE_KEY!r} is {image.np_dtype} {tuple(image.shape)}; expected uint8 '
                           f'[H, W, C] images')
    shape = tuple(image.shape) if len(image.shape) == 3 else tuple(image.shape) + (1,)
    label_kind, label_dim = None, 0
    if LABEL_KEY in keys:
        label = features[LABEL_KEY]
        if isinstance(label, tfds.features.ClassLabel):
            label_kind, label_dim = 'class', int(label.num_classes)
        elif (len(label.shape) == 1 and label.shape[0] is not None
              and np.issubdtype(np.dtype(label.np_dtype), np.floating)):
            label_kind, label_dim = 'vector', int(label.shape[0])
    return {'image_key': IMAGE_KEY, 'image_shape': shape, 'label_key': LABEL_KEY if label_kind else None,
            'label_kind': label_kind, 'label_dim': label_dim}


def open_tfds_source(path_or_name, *, split='train', data_dir=None):
    """The TFDS random-access source of a dataset directory or a registered name, with what _describe found:
    {'name', 'source', 'num_images', 'image_key', 'image_shape' (entries may be None), 'label_key',
    'label_kind', 'label_dim', 'metadata'}."""
    import tensorflow_datasets as tfds    # lazily: see the package docstring
    spec = os.fspath(path_or_name)
    if os.path.exists(spec):
        if not os.path.isfile(os.path.join(spec, 'dataset_info.json')):
            raise DatasetError(f'{spec}: not a dataset made by the dataset tool (no dataset_info.json); convert it '
                               f'first: python -m sg3jax.dataset_tool --source {spec} --dest DIR')
        where = spec
        try:
            builder = tfds.builder_from_directory(spec)
        except Exception as e:
            raise DatasetError(f'{spec}: cannot read the TFDS metadata ({type(e).__name__}: {e})') from e
    elif os.sep in spec or spec.endswith('.zip') or spec.startswith(('.', '~')):
        raise DatasetError(f'{spec}: no such dataset directory')
    else:
        where = f'TFDS dataset {spec!r}'
        try:
            builder = tfds.builder(spec, data_dir=data_dir)
        except Exception as e:
            raise DatasetError(f'{where}: not found ({type(e).__name__}: {e})') from e
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:
        raise DatasetError(f'{where}: cannot open split {split!r} for random access ({type(e).__name__}: {e}); '
                           f'TFDS datasets must be prepared as ArrayRecord, e.g. '
                           f'`tfds build {spec} --file_format=array_record`') from e
    info = _describe(builder.info.features, where)
    return dict(info, name=builder.info.name, source=source, num_images=len(source),
                metadata=dict(builder.info.metadata or {}))


class Dataset:
    """An opened dataset; attributes as the official training/dataset.py (`resolution`, `num_channels`,
    `label_dim`, `has_labels`), plus `num_images` (before x-flips: mirroring is the pipeline's job)."""

    def __init__(self, info, where):
        shape = info['image_shape']
        if shape[0] is None or shape[0] != shape[1] or shape[2] not in (1, 3):
            raise DatasetError(f'{where}: images are {shape}; training needs one square size with 1 or 3 channels, '
                               f'so convert it first: python -m sg3jax.dataset_tool --source tfds:NAME --dest DIR '
                               f'--resolution 256x256 --transform center-crop')
        if shape[0] < 4 or shape[0] & (shape[0] - 1):
            raise DatasetError(f'{where}: resolution {shape[0]}x{shape[1]} is not a power of two; convert it with '
                               f'the dataset tool and --resolution')
        self.name = info['name']
        self.source = info['source']              # the TFDS data source (random access, decodes one example)
        self.num_images = info['num_images']
        self.resolution, _, self.num_channels = shape
        self.image_shape = shape                  # [H, W, C]
        self.label_kind = info['label_kind']      # None | 'class' | 'vector'
        self.label_dim = info['label_dim']
        self.has_labels = self.label_dim > 0
        self.metadata = info['metadata']
        self._image_key, self._label_key = info['image_key'], info['label_key']
        self._onehot = np.eye(self.label_dim, dtype=np.float32) if self.label_kind == 'class' else None

    def __len__(self):
        return self.num_images

    def read(self, i):
        """(image, label): the image may be a read-only view into the decoded record (no copy); label is float32
        [label_dim] (zeros of size 0 without labels)."""
        example = self.source[int(i)]
        img = example[self._image_key]
        if img.ndim == 2:
            img = img[:, :, None]
        if self.label_kind == 'class':
            label = self._onehot[int(example[self._label_key])]
        elif self.label_kind == 'vector':
            label = np.asarray(example[self._label_key], np.float32)
        else:
            label = np.zeros((0,), np.float32)
        return img, label

    def __getitem__(self, i):
        if not -self.num_images <= i < self.num_images:
            raise IndexError(f'image index {i} out of range for {self.num_images} images')
        img, label = self.read(i % self.num_images)
        return np.array(img), np.array(label)

    def __repr__(self):
        return (f'Dataset({self.name!r}, num_images={self.num_images}, resolution={self.resolution}, '
                f'num_channels={self.num_channels}, label_dim={self.label_dim})')


def open_dataset(path_or_name, *, split='train', data_dir=None):
    """A dataset tool output directory, or a TFDS name (read from `data_dir`, TFDS's default when None)."""
    info = open_tfds_source(path_or_name, split=split, data_dir=data_dir)
    if info['num_images'] == 0:
        raise DatasetError(f'{path_or_name}: split {split!r} has no images')
    return Dataset(info, os.fspath(path_or_name))

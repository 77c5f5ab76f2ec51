"""The dataset tool's inputs: an image folder (recursive), a zip of images, either with the official `dataset.json`
labels (so official StyleGAN3 dataset zips/folders are just this case), or a TFDS dataset (`tfds:NAME`).

A source is a plain dict:
    {'path':       what the user passed,
     'kind':       'folder' | 'zip' | 'tfds',
     'names':      the images in the order they are written (sorted relative '/' paths, like the official tool),
     'label_kind': None | 'class' (int >= 0, one-hot later) | 'vector' (list of floats, used as is),
     'label_dim':  0, 1 + the largest class, or the vector length,
     'load':       name -> (uint8 [H, W, C] image with C in {1, 3}, label or None); raises DatasetError}
"""

import contextlib
import io
import json
import numbers
import os
import zipfile

import numpy as np
import PIL.Image

from sg3jax.data import dataset as dataset_lib   # the reader knows how TFDS features map to image/label
from sg3jax.data.errors import DatasetError

LABELS_FILE = 'dataset.json'    # official name and place: the root of the folder or zip (dataset_tool.py)


def image_extensions():
    """Lower-case extensions (with the dot) of the formats PIL can read; the official tool also asks PIL, but its
    list includes write-only formats (.pdf), which would then fail to decode."""
    PIL.Image.init()
    return {ext for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN}


def _is_junk(name):
    # Zips made on macOS carry `__MACOSX/._x.png` resource forks that have image extensions but are not images.
    parts = name.split('/')
    return parts[0] == '__MACOSX' or parts[-1].startswith('._')


def decode_image(data, name):
    """Encoded bytes -> uint8 [H, W, C], C = 1 (grayscale) or 3 (RGB), the two layouts StyleGAN trains on."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()     # decode now: truncated or corrupt files fail here, not later in the writer
            mode = im.mode
            if mode == '1':
                im = im.convert('L')
            elif mode == 'P':
                # Palette images are usually RGB in disguise; keep transparency visible so it is refused below.
                im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
            elif mode in ('CMYK', 'YCbCr', 'LAB', 'HSV'):
                im = im.convert('RGB')
            img = np.asarray(im)
            mode = im.mode
    except PIL.UnidentifiedImageError as e:
        raise DatasetError(f'{name}: cannot read the image (not a format PIL recognises, or corrupt)') from e
    except Exception as e:   # any failure to decode a user's file is the same problem: the file is bad
        raise DatasetError(f'{name}: cannot read the image ({type(e).__name__}: {e})') from e
    if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        raise DatasetError(f'{name}: the image has an alpha channel (mode {mode}); datasets are RGB or grayscale, '
                           f'so flatten the images first')
    if mode not in ('L', 'RGB') or img.dtype != np.uint8:
        raise DatasetError(f'{name}: unsupported pixel format (mode {mode}, {img.dtype}); save the images as '
                           f'8-bit RGB or grayscale')
    return img[:, :, None] if img.ndim == 2 else img


def parse_labels(text, names, where):
    """`dataset.json` text -> ({name: label} or None, label_kind, label_dim).

    Official format: {"labels": [["00000/img00000000.png", 6], ...]} or {"labels": null}. A label is a class index
    (int >= 0; one-hot with 1 + the largest class, as official dataset.py) or a list of numbers (used as is).
    `names` is every image of the source, so a label naming a file that is not there is caught."""
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise DatasetError(f'{where}: not valid JSON ({e})') from e
    if not isinstance(meta, dict) or 'labels' not in meta:
        raise DatasetError(f'{where}: expected an object with a "labels" list, as the official dataset_tool writes')
    entries = meta['labels']
    if entries is None:
        return None, None, 0
    if not isinstance(entries, list):
        raise DatasetError(f'{where}: "labels" must be a list of [filename, label] pairs or null')
    present = set(names)
    labels, first_entry, kinds = {}, {}, set()
    for i, entry in enumerate(entries):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(f'{where}: entry #{i} ({entry!r:.80}) is not a [filename, label] pair')
        fname, label = entry[0].replace('\\', '/'), entry[1]
        if fname in labels:
            raise DatasetError(f'{where}: duplicate label for {fname!r} (entries #{first_entry[fname]} and #{i})')
        if fname not in present:
            raise DatasetError(f'{where}: entry #{i} labels {fname!r}, but there is no such image in the source')
        if isinstance(label, numbers.Integral) and not isinstance(label, bool) and label >= 0:
            kinds.add('class')
            label = int(label)
        elif (isinstance(label, list) and label
              and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in label)):
            kinds.add('vector')
            label = [float(v) for v in label]
        else:
            raise DatasetError(f'{where}: label of {fname!r} is {label!r:.80}; a label is a class index (int >= 0) '
                               f'or a non-empty list of numbers')
        labels[fname] = label
        first_entry[fname] = i
    if len(kinds) > 1:
        raise DatasetError(f'{where}: mixes class indices and label vectors; use one kind for every image')
    if not labels:
        return None, None, 0
    kind = kinds.pop()
    if kind == 'class':
        return labels, kind, 1 + max(labels.values())
    lengths = {len(v) for v in labels.values()}
    if len(lengths) > 1:
        raise DatasetError(f'{where}: label vectors have different lengths {sorted(lengths)}')
    return labels, kind, lengths.pop()


def _labelled_loader(read, labels, where):
    """name -> (image, label) for folder and zip sources, `read(name) -> bytes`."""
    def load(name):
        img = decode_image(read(name), name)
        if labels is None:
            return img, None
        if name not in labels:
            raise DatasetError(f'{name}: the image has no label in {where}; every image needs one (or none do)')
        return img, labels[name]
    return load


@contextlib.contextmanager
def _open_folder(path):
    exts = image_extensions()
    names = []
    for root, _, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
            if os.path.splitext(f)[1].lower() in exts and not _is_junk(rel):
                names.append(rel)
    names.sort()
    labels, kind, dim = None, None, 0
    meta = os.path.join(path, LABELS_FILE)
    if os.path.isfile(meta):
        with open(meta, encoding='utf-8') as f:
            labels, kind, dim = parse_labels(f.read(), names, meta)

    def read(name):
        try:
            with open(os.path.join(path, name), 'rb') as f:
                return f.read()
        except OSError as e:
            raise DatasetError(f'{name}: cannot read the file ({e})') from e

    yield {'path': path, 'kind': 'folder', 'names': names, 'label_kind': kind, 'label_dim': dim,
           'load': _labelled_loader(read, labels, meta)}


@contextlib.contextmanager
def _open_zip(path):
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f'{path}: cannot open the zip ({e})') from e
    with zf:
        exts = image_extensions()
        all_names = set(zf.namelist())
        names = sorted(n for n in all_names if not n.endswith('/') and os.path.splitext(n)[1].lower() in exts
                       and not _is_junk(n))
        labels, kind, dim = None, None, 0
        if LABELS_FILE in all_names:
            labels, kind, dim = parse_labels(zf.read(LABELS_FILE).decode('utf-8'), names,
                                             f'{path}:{LABELS_FILE}')

        def read(name):
            try:
                return zf.read(name)
            except (OSError, zipfile.BadZipFile, EOFError) as e:   # e.g. a CRC mismatch in a damaged archive
                raise DatasetError(f'{name}: cannot read it from {path} ({e})') from e

        yield {'path': path, 'kind': 'zip', 'names': names, 'label_kind': kind, 'label_dim': dim,
               'load': _labelled_loader(read, labels, f'{path}:{LABELS_FILE}')}


@contextlib.contextmanager
def _open_tfds(spec, data_dir=None):
    name = spec[len('tfds:'):]
    ds = dataset_lib.open_tfds_source(name, split='train', data_dir=data_dir)
    names = [f'{name}[{i}]' for i in range(len(ds['source']))]

    def load(item):
        i = int(item[item.rindex('[') + 1:-1])
        example = ds['source'][i]
        img = np.asarray(example[ds['image_key']])
        img = img[:, :, None] if img.ndim == 2 else img
        label = None
        if ds['label_kind'] == 'class':
            label = int(example[ds['label_key']])
        elif ds['label_kind'] == 'vector':
            label = [float(v) for v in np.asarray(example[ds['label_key']]).reshape(-1)]
        return img, label

    yield {'path': spec, 'kind': 'tfds', 'names': names, 'label_kind': ds['label_kind'],
           'label_dim': ds['label_dim'], 'load': load}


def open_source(path, *, data_dir=None):
    """Context manager yielding the source dict (module docstring) for a folder, a .zip or `tfds:NAME`."""
    path = os.fspath(path)
    if path.startswith('tfds:'):
        return _open_tfds(path, data_dir)
    if os.path.isdir(path):
        return _open_folder(path)
    if os.path.isfile(path):
        if path.lower().endswith('.zip'):
            return _open_zip(path)
        raise DatasetError(f'--source {path}: not a folder, a .zip or tfds:NAME')
    raise DatasetError(f'--source {path}: no such file or directory')

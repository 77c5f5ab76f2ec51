"""The dataset tool: every source type round-trips pixels and labels exactly, transforms match the official
arithmetic, and every kind of bad input stops with one error naming the file, leaving nothing behind."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest

from faults import file_size_limit
from sg3jax import dataset_tool
from sg3jax.data import DatasetError, convert_dataset, open_dataset


def _rand(seed, h, w, c=3):
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path, arr, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(arr).save(path, **kw)


def _decoded(path):
    """What the tool must store for a file: PIL's decode, HWC."""
    arr = np.asarray(PIL.Image.open(path))
    return arr[:, :, None] if arr.ndim == 2 else arr


def _filenames(ds):
    return [ds.source[i]['filename'].decode() for i in range(ds.num_images)]


def _leftovers(parent):
    return [f for f in os.listdir(parent) if '.tmp-' in f]


@pytest.fixture
def folder(tmp_path):
    """A nested folder: PNGs in two levels, a JPEG, and files that are not images."""
    src = tmp_path / 'src'
    _save(src / 'b' / 'x.png', _rand(1, 16, 16))
    _save(src / 'a.png', _rand(2, 16, 16))
    _save(src / 'b' / 'c' / 'y.jpg', _rand(3, 16, 16), quality=90)
    _save(src / 'b' / 'c' / 'z.png', _rand(4, 16, 16))
    (src / 'notes.txt').write_text('not an image')
    return src


def test_folder_recursive_round_trip(folder, tmp_path):
    summary = convert_dataset(folder, tmp_path / 'out', progress=False)
    assert summary['num_images'] == 4 and summary['skipped'] == [] and summary['label_dim'] == 0
    ds = open_dataset(tmp_path / 'out')
    assert (ds.num_images, ds.resolution, ds.num_channels, ds.label_dim, ds.has_labels) == (4, 16, 3, 0, False)
    names = ['a.png', 'b/c/y.jpg', 'b/c/z.png', 'b/x.png']         # sorted relative paths, as official
    assert _filenames(ds) == names
    for i, name in enumerate(names):
        img, c = ds[i]
        np.testing.assert_array_equal(img, _decoded(folder / name))
        assert img.dtype == np.uint8 and c.shape == (0,)
    meta = json.loads((tmp_path / 'out' / 'metadata.json').read_text())
    assert (meta['resolution'], meta['num_channels'], meta['label_dim'], meta['num_images']) == (16, 3, 0, 4)
    assert _leftovers(tmp_path) == []


def test_zip_source_equals_folder(folder, tmp_path):
    with zipfile.ZipFile(tmp_path / 'src.zip', 'w') as z:
        for root, _, files in os.walk(folder):
            for f in files:
                z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), folder))
        z.writestr('__MACOSX/._a.png', b'resource fork, not an image')      # macOS junk is ignored
    convert_dataset(folder, tmp_path / 'from_folder', progress=False)
    convert_dataset(tmp_path / 'src.zip', tmp_path / 'from_zip', progress=False)
    a, b = open_dataset(tmp_path / 'from_folder'), open_dataset(tmp_path / 'from_zip')
    assert a.num_images == b.num_images == 4 and _filenames(a) == _filenames(b)
    for i in range(4):
        np.testing.assert_array_equal(a[i][0], b[i][0])


def test_official_stylegan3_zip_with_class_labels(tmp_path):
    """The official tool's output: 00000/img%08d.png entries and dataset.json class labels at the root."""
    images = [_rand(10 + i, 8, 8) for i in range(5)]
    classes = [3, 0, 3, 1, 2]
    names = [f'00000/img{i:08d}.png' for i in range(5)]
    with zipfile.ZipFile(tmp_path / 'official.zip', 'w', compression=zipfile.ZIP_STORED) as z:
        for name, img in zip(names, images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='png', compress_level=0)
            z.writestr(name, buf.getvalue())
        z.writestr('dataset.json', json.dumps({'labels': [[n, c] for n, c in zip(names, classes)]}))
    summary = convert_dataset(tmp_path / 'official.zip', tmp_path / 'out', progress=False)
    assert summary['label_dim'] == 4
    ds = open_dataset(tmp_path / 'out')
    assert ds.label_dim == 4 and ds.has_labels and ds.label_kind == 'class'   # 1 + largest class, as official
    for i in range(5):
        img, c = ds[i]
        np.testing.assert_array_equal(img, images[i])
        np.testing.assert_array_equal(c, np.eye(4, dtype=np.float32)[classes[i]])


def test_official_folder_with_vector_labels(tmp_path):
    src = tmp_path / 'src'
    vectors = {'00000/img00000000.png': [0.5, -1.0, 2.0], '00000/img00000001.png': [1.0, 0.0, 0.25]}
    for i, name in enumerate(vectors):
        _save(src / name, _rand(i, 8, 8))
    (src / 'dataset.json').write_text(json.dumps({'labels': [[k, v] for k, v in vectors.items()]}))
    convert_dataset(src, tmp_path / 'out', progress=False)
    ds = open_dataset(tmp_path / 'out')
    assert ds.label_dim == 3 and ds.label_kind == 'vector'
    for i, v in enumerate(vectors.values()):
        np.testing.assert_array_equal(ds[i][1], np.float32(v))


def test_null_labels_mean_unlabelled(tmp_path):
    src = tmp_path / 'src'
    _save(src / 'a.png', _rand(0, 8, 8))
    (src / 'dataset.json').write_text(json.dumps({'labels': None}))
    convert_dataset(src, tmp_path / 'out', progress=False)
    assert open_dataset(tmp_path / 'out').label_dim == 0


def test_grayscale(tmp_path):
    src = tmp_path / 'src'
    grays = [_rand(i, 8, 8, c=1) for i in range(3)]
    for i, g in enumerate(grays):
        _save(src / f'{i}.png', g)
    convert_dataset(src, tmp_path / 'out', progress=False)
    ds = open_dataset(tmp_path / 'out')
    assert ds.num_channels == 1 and ds.image_shape == (8, 8, 1)
    for i, g in enumerate(grays):
        np.testing.assert_array_equal(ds[i][0][:, :, 0], g)


def test_resolution_resizes_with_lanczos(tmp_path):
    src = tmp_path / 'src'
    img = _rand(0, 16, 16)
    _save(src / 'a.png', img)
    convert_dataset(src, tmp_path / 'out', resolution='8x8', progress=False)
    expected = np.asarray(PIL.Image.fromarray(img).resize((8, 8), PIL.Image.LANCZOS))
    np.testing.assert_array_equal(open_dataset(tmp_path / 'out')[0][0], expected)


def test_center_crop_and_center_crop_wide(tmp_path):
    src = tmp_path / 'src'
    wide = _rand(0, 8, 16)                     # h=8, w=16
    _save(src / 'a.png', wide)
    convert_dataset(src, tmp_path / 'crop', transform='center-crop', resolution=(8, 8), progress=False)
    np.testing.assert_array_equal(open_dataset(tmp_path / 'crop')[0][0], wide[:, 4:12])   # centred square

    # center-crop-wide 16x8: keep the 16:8 frame (no resize needed here), centred on a black 16x16 canvas.
    _save(src / 'b_small.png', _rand(1, 8, 8))   # narrower than 16: dropped, as official
    summary = convert_dataset(src, tmp_path / 'wide', transform='center-crop-wide', resolution='16x8',
                              progress=False)
    assert summary['dropped'] == ['b_small.png'] and summary['num_images'] == 1
    expected = np.zeros((16, 16, 3), np.uint8)
    expected[4:12] = wide
    np.testing.assert_array_equal(open_dataset(tmp_path / 'wide')[0][0], expected)


def test_max_images_and_shards(tmp_path):
    src = tmp_path / 'src'
    images = [_rand(i, 8, 8) for i in range(7)]
    for i, img in enumerate(images):
        _save(src / f'{i}.png', img)
    # 2 images per shard: 5 images make 3 ArrayRecord files, read back in order.
    convert_dataset(src, tmp_path / 'out', max_images=5, shard_bytes=2 * 8 * 8 * 3, progress=False)
    shards = sorted(f for f in os.listdir(tmp_path / 'out') if '.array_record-' in f)
    assert shards == [f'out-train.array_record-{i:05d}-of-00003' for i in range(3)]
    ds = open_dataset(tmp_path / 'out')
    assert ds.num_images == 5
    for i in range(5):
        np.testing.assert_array_equal(ds[i][0], images[i])


def test_tfds_source_with_resize(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=3):
        summary = convert_dataset('tfds:cifar10', tmp_path / 'out', resolution='16x16', progress=False)
        mock = tfds.data_source('cifar10', split='train')
        expected = [(np.asarray(PIL.Image.fromarray(mock[i]['image']).resize((16, 16), PIL.Image.LANCZOS)),
                     int(mock[i]['label'])) for i in range(3)]
    assert summary['label_dim'] == 10
    ds = open_dataset(tmp_path / 'out')
    for i, (img, label) in enumerate(expected):
        np.testing.assert_array_equal(ds[i][0], img)
        np.testing.assert_array_equal(ds[i][1], np.eye(10, dtype=np.float32)[label])


# --- Bad input: one DatasetError naming the file and the problem; dest absent, no temporary left. -------------

def _png_bytes(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def _make_bad(kind, src):
    """Writes good images 0..2.png and one bad case; returns (words the error must contain, kwargs)."""
    for i in range(3):
        _save(src / f'{i}.png', _rand(i, 8, 8))
    if kind == 'corrupt':
        (src / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n this is not a png')
        return ['bad.png', 'cannot read the image'], {}
    if kind == 'truncated':
        (src / 'bad.png').write_bytes(_png_bytes(_rand(9, 8, 8))[:60])
        return ['bad.png', 'cannot read the image'], {}
    if kind == 'mixed_sizes':
        _save(src / 'bad.png', _rand(9, 16, 16))
        return ['bad.png', '16x16', '0.png', '8x8', 'one size'], {}
    if kind == 'gray_rgb_mix':
        _save(src / 'bad.png', _rand(9, 8, 8, c=1))
        return ['bad.png', 'grayscale', 'RGB'], {}
    if kind == 'alpha':
        _save(src / 'bad.png', _rand(9, 8, 8, c=4))
        return ['bad.png', 'alpha'], {}
    if kind == 'non_power_of_two':
        for i in range(3):
            _save(src / f'{i}.png', _rand(i, 12, 12))
        return ['0.png', '12x12', 'power of two'], {}
    if kind == 'non_square':
        for i in range(3):
            _save(src / f'{i}.png', _rand(i, 8, 16))
        return ['0.png', '16x8', 'not square'], {}
    if kind == 'label_missing_image':
        (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 0], ['1.png', 1], ['2.png', 0],
                                                                 ['gone.png', 1]]}))
        return ['dataset.json', 'gone.png', 'no such image'], {}
    if kind == 'duplicate_label':
        (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 0], ['1.png', 1], ['2.png', 0],
                                                                 ['1.png', 0]]}))
        return ['dataset.json', '1.png', 'duplicate'], {}
    if kind == 'image_without_label':
        (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 0], ['1.png', 1]]}))
        return ['2.png', 'no label'], {}
    if kind == 'bad_json':
        (src / 'dataset.json').write_text('{"labels": [')
        return ['dataset.json', 'JSON'], {}
    if kind == 'resolution_not_power_of_two':
        return ['12x12', 'power of two'], {'resolution': '12x12'}
    if kind == 'transform_without_resolution':
        return ['--transform', '--resolution'], {'transform': 'center-crop'}
    raise AssertionError(kind)


BAD = ['corrupt', 'truncated', 'mixed_sizes', 'gray_rgb_mix', 'alpha', 'non_power_of_two', 'non_square',
       'label_missing_image', 'duplicate_label', 'image_without_label', 'bad_json', 'resolution_not_power_of_two',
       'transform_without_resolution']


@pytest.mark.parametrize('kind', BAD)
def test_bad_input_one_clear_error_nothing_written(kind, tmp_path):
    src = tmp_path / 'src'
    words, kwargs = _make_bad(kind, src)
    # One image per shard, so errors that come late happen after complete shards exist in the temporary dir.
    with pytest.raises(DatasetError) as e:
        convert_dataset(src, tmp_path / 'out', shard_bytes=1, progress=False, **kwargs)
    for word in words:
        assert word in str(e.value), (word, str(e.value))
    assert not (tmp_path / 'out').exists() and _leftovers(tmp_path) == []


def test_skip_bad_reports_and_keeps_the_good(tmp_path, capsys):
    src = tmp_path / 'src'
    good = [_rand(i, 8, 8) for i in range(3)]
    for i, img in enumerate(good):
        _save(src / f'{i}.png', img)
    (src / 'bad1.png').write_bytes(b'garbage')
    _save(src / 'bad2.png', _rand(9, 16, 16))
    _save(src / 'bad3.png', _rand(9, 8, 8, c=1))
    code = dataset_tool.main(['--source', str(src), '--dest', str(tmp_path / 'out'), '--skip-bad'])
    out = capsys.readouterr().out
    assert code == 0
    for name in ('bad1.png', 'bad2.png', 'bad3.png'):
        assert f'skipped {name}: ' in out
    assert 'wrote 3 images (8x8, 3 channels, label_dim 0)' in out and 'skipped 3' in out
    ds = open_dataset(tmp_path / 'out')
    assert ds.num_images == 3
    for i in range(3):
        np.testing.assert_array_equal(ds[i][0], good[i])
    meta = json.loads((tmp_path / 'out' / 'metadata.json').read_text())
    assert [s['file'] for s in meta['skipped']] == ['bad1.png', 'bad2.png', 'bad3.png']


def test_dest_is_refused_when_not_empty_or_a_zip(folder, tmp_path):
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'keep.txt').write_text('mine')
    with pytest.raises(DatasetError, match='not empty'):
        convert_dataset(folder, tmp_path / 'full', progress=False)
    assert os.listdir(tmp_path / 'full') == ['keep.txt']
    with pytest.raises(DatasetError, match='not a zip'):
        convert_dataset(folder, tmp_path / 'out.zip', progress=False)
    (tmp_path / 'empty').mkdir()                                  # an empty directory is fine: it is replaced
    convert_dataset(folder, tmp_path / 'empty', progress=False)
    assert open_dataset(tmp_path / 'empty').num_images == 4


def test_cli_error_exit_code_and_message(tmp_path, capsys):
    code = dataset_tool.main(['--source', str(tmp_path / 'nope'), '--dest', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: --source ') and 'no such file or directory' in err
    assert not (tmp_path / 'out').exists()



def test_a_failed_write_is_one_error_naming_dest_and_leaves_nothing(folder, tmp_path, capsys):
    """Every write past 1 KB fails (as on a full disk) while the tool writes 16x16 images: exit status 2, one
    line naming --dest and the write that failed, no dataset and no temporary folder."""
    dest = tmp_path / 'out'
    with file_size_limit(1024):
        code = dataset_tool.main(['--source', str(folder), '--dest', str(dest)])
    errors = [l for l in capsys.readouterr().err.replace('\r', '\n').splitlines() if l.startswith('error')]
    assert code == 2 and len(errors) == 1, errors         # (the rest of stderr is the progress bar)
    assert errors[0].startswith(f'error: --dest {dest}: writing the dataset failed (') and 'File too large' in errors[0]
    assert errors[0].endswith('nothing was written')
    assert not dest.exists() and not _leftovers(tmp_path)

def test_cli_module_writes_and_reads_without_tensorflow(folder, tmp_path):
    """`python -m sg3jax.dataset_tool`, then read the dataset through the pipeline: TensorFlow is never imported,
    not even tried. A stand-in `tensorflow` package first on the path records any import of it (and then fails
    it, as a missing TensorFlow would), so this holds whether or not TensorFlow is installed."""
    stub = tmp_path / 'stub' / 'tensorflow'
    stub.mkdir(parents=True)
    marker = tmp_path / 'tensorflow-imported'
    (stub / '__init__.py').write_text(f'open({str(marker)!r}, "a").write("imported\\n")\n'
                                      'raise ImportError("tensorflow stand-in (test_dataset_tool)")\n')
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               PYTHONPATH=os.pathsep.join([str(stub.parent), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    r = subprocess.run([sys.executable, '-c', 'import tensorflow'], capture_output=True, text=True, env=env)
    assert 'tensorflow stand-in' in r.stderr and marker.exists()       # the stand-in is what `import` finds
    marker.unlink()
    r = subprocess.run([sys.executable, '-m', 'sg3jax.dataset_tool', '--source', str(folder), '--dest',
                        str(tmp_path / 'out'), '--resolution', '8x8'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert 'wrote 4 images (8x8, 3 channels, label_dim 0)' in r.stdout
    code = ('import sys; from sg3jax import data; ds = data.open_dataset(sys.argv[1]); '
            'b = next(data.make_iterator(ds, global_batch_size=4, seed=0)); print(b["img"].shape)')
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'out')], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[0] == '(4, 8, 8, 3)'
    assert not marker.exists(), 'something imported (or tried to import) tensorflow'

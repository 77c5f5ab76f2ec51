"""The input pipeline: exact pixels and one-hot labels, x-flips, deterministic shuffling, disjoint per-process
shards that cover the dataset, exact resume from a position, named TFDS datasets, and global arrays."""

import os

import numpy as np
import PIL.Image
import pytest

from sg3jax.data import DatasetError, convert_dataset, make_iterator, open_dataset, to_global_array
from sg3jax.data import pipeline

N, R, CLASSES = 10, 8, 3


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
    """10 random 8x8 RGB images (not x-symmetric, so a flip is visible) with classes i % 3."""
    root = tmp_path_factory.mktemp('labelled')
    images = [np.random.default_rng(i).integers(0, 256, (R, R, 3), dtype=np.uint8) for i in range(N)]
    for i, img in enumerate(images):
        os.makedirs(root / 'src', exist_ok=True)
        PIL.Image.fromarray(img).save(root / 'src' / f'{i:02d}.png')
    (root / 'src' / 'dataset.json').write_text(
        '{"labels": [' + ', '.join(f'["{i:02d}.png", {i % CLASSES}]' for i in range(N)) + ']}')
    convert_dataset(root / 'src', root / 'ds', progress=False)
    return open_dataset(root / 'ds'), np.stack(images), np.arange(N) % CLASSES


def _take(it, n):
    return [next(it) for _ in range(n)]


def _expected(images, classes, raw, xflip):
    img = images[raw].copy()
    img[xflip] = img[xflip][:, :, ::-1]
    return img, np.eye(CLASSES, dtype=np.float32)[classes[raw]]


def test_open_dataset_properties_and_random_access(labelled):
    ds, images, classes = labelled
    assert (ds.num_images, len(ds), ds.resolution, ds.num_channels, ds.label_dim, ds.has_labels) == \
        (N, N, R, 3, CLASSES, True)
    for i in (0, 7, -1):
        img, c = ds[i]
        np.testing.assert_array_equal(img, images[i])
        np.testing.assert_array_equal(c, np.eye(CLASSES, dtype=np.float32)[classes[i]])
    with pytest.raises(IndexError):
        ds[N]


def test_batches_are_the_sampled_images_flipped_and_labelled(labelled):
    ds, images, classes = labelled
    sample = pipeline.make_sampler(num_images=N, global_batch_size=4, seed=3, mirror=True)
    it = make_iterator(ds, global_batch_size=4, seed=3, mirror=True, prefetch=2)
    flips = 0
    for step, batch in enumerate(_take(it, 10)):
        raw, xflip = sample(step)
        img, c = _expected(images, classes, raw, xflip)
        assert batch['img'].dtype == np.uint8 and batch['img'].shape == (4, R, R, 3)
        np.testing.assert_array_equal(batch['img'], img)
        np.testing.assert_array_equal(batch['c'], c)
        flips += xflip.sum()
    assert 0 < flips < 40
    assert it.state() == {'step': 10}
    it.close()


@pytest.mark.parametrize('mirror', [False, True])
def test_each_epoch_is_a_permutation_of_the_index_space(mirror):
    size = N * (2 if mirror else 1)
    sample = pipeline.make_sampler(num_images=N, global_batch_size=5, seed=0, mirror=mirror)
    for epoch in range(3):
        pairs = [p for step in range(epoch * size // 5, (epoch + 1) * size // 5)
                 for p in zip(*map(list, sample(step)))]
        expected = [(i, f) for i in range(N) for f in ([False, True] if mirror else [False])]
        assert sorted(pairs) == expected
    # Different epochs are shuffled differently; a (seed, epoch) always the same way, pinned to known orders: a
    # run checkpointed by an earlier version resumes with the images it would have seen (its data position is a
    # step count, replayed through this shuffle).
    assert not np.array_equal(pipeline.epoch_permutation(0, 0, size), pipeline.epoch_permutation(0, 1, size))
    assert pipeline.epoch_permutation(5, 2, 20).tolist() == [3, 18, 14, 7, 5, 0, 17, 10, 13, 15, 9, 2, 11, 12, 8,
                                                             4, 1, 6, 19, 16]
    assert pipeline.epoch_permutation(0, 0, 20).tolist() == [10, 16, 3, 2, 18, 12, 19, 15, 13, 8, 17, 7, 4, 0, 6,
                                                             11, 1, 14, 5, 9]


def _pairs(raw, flip):
    return list(zip(raw.tolist(), flip.tolist()))


def test_two_processes_see_disjoint_data_covering_the_set():
    # 2N = 20 mirrored items, global batch 4 = 2 processes x 2 rows: an epoch is exactly steps 5e .. 5e + 4.
    kwargs = dict(num_images=N, global_batch_size=4, seed=1, mirror=True)
    single = pipeline.make_sampler(**kwargs)
    procs = [pipeline.make_sampler(**kwargs, process_index=p, process_count=2) for p in range(2)]
    everything = sorted((i, f) for i in range(N) for f in (False, True))
    for epoch in range(2):
        seen = [[], []]
        for step in range(5 * epoch, 5 * epoch + 5):
            parts = [s(step) for s in procs]
            # Process p holds rows [2p, 2p + 2) of the single-process global batch.
            assert _pairs(*parts[0]) + _pairs(*parts[1]) == _pairs(*single(step))
            for p in range(2):
                seen[p] += _pairs(*parts[p])
        assert len(seen[0]) == len(set(seen[0])) == 10 and set(seen[0]).isdisjoint(seen[1])
        assert sorted(seen[0] + seen[1]) == everything


def test_sharded_iterators_concatenate_to_the_global_batch(labelled):
    ds = labelled[0]
    full = make_iterator(ds, global_batch_size=6, seed=2, mirror=True, prefetch=0)
    halves = [make_iterator(ds, global_batch_size=6, seed=2, mirror=True, process_index=p, process_count=2)
              for p in range(2)]
    for _ in range(4):
        g = next(full)
        a, b = next(halves[0]), next(halves[1])
        assert a['img'].shape == (3, R, R, 3)
        np.testing.assert_array_equal(np.concatenate([a['img'], b['img']]), g['img'])
        np.testing.assert_array_equal(np.concatenate([a['c'], b['c']]), g['c'])


def test_resume_continues_with_the_next_unseen_batch(labelled):
    ds = labelled[0]
    # Batch 7 does not divide 2N = 20: batches straddle epoch boundaries, where resume bugs would show.
    kwargs = dict(global_batch_size=7, seed=11, mirror=True)
    run = make_iterator(ds, **kwargs, prefetch=3)
    uninterrupted = _take(run, 9)
    interrupted = make_iterator(ds, **kwargs)
    _take(interrupted, 4)
    position = interrupted.state()['step']          # what the trainer checkpoints
    interrupted.close()
    assert position == 4
    resumed = make_iterator(ds, **kwargs, start_step=position)
    for expected, got in zip(uninterrupted[4:], _take(resumed, 5)):
        np.testing.assert_array_equal(got['img'], expected['img'])
        np.testing.assert_array_equal(got['c'], expected['c'])
    assert resumed.state() == {'step': 9}
    run.close()
    resumed.close()


def test_seed_changes_order_and_threads_do_not(labelled):
    ds = labelled[0]
    a = _take(make_iterator(ds, global_batch_size=5, seed=0, prefetch=0, num_threads=1), 4)
    b = _take(make_iterator(ds, global_batch_size=5, seed=0, prefetch=3, num_threads=4), 4)
    c = _take(make_iterator(ds, global_batch_size=5, seed=1), 4)
    assert all(np.array_equal(x['img'], y['img']) for x, y in zip(a, b))
    assert not all(np.array_equal(x['img'], y['img']) for x, y in zip(a, c))


def test_no_mirror_never_flips(labelled):
    ds, images, _ = labelled
    batch = next(make_iterator(ds, global_batch_size=N, seed=4, mirror=False))
    # One epoch in one batch: a permutation of the unflipped images.
    order = [next(i for i in range(N) if np.array_equal(images[i], x)) for x in batch['img']]
    assert sorted(order) == list(range(N))


def test_labels_off_or_absent_give_zero_width_c(labelled, tmp_path):
    ds = labelled[0]
    assert next(make_iterator(ds, global_batch_size=4, use_labels=False))['c'].shape == (4, 0)
    os.makedirs(tmp_path / 'src')
    PIL.Image.fromarray(np.zeros((R, R, 3), np.uint8)).save(tmp_path / 'src' / 'a.png')
    convert_dataset(tmp_path / 'src', tmp_path / 'ds', progress=False)
    batch = next(make_iterator(open_dataset(tmp_path / 'ds'), global_batch_size=3))
    assert batch['c'].shape == (3, 0) and batch['c'].dtype == np.float32 and batch['img'].shape == (3, R, R, 3)


def test_named_tfds_dataset_through_the_same_pipeline():
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=8):
        ds = open_dataset('cifar10')
        assert (ds.num_images, ds.resolution, ds.num_channels, ds.label_dim) == (8, 32, 3, 10)
        sample = pipeline.make_sampler(num_images=8, global_batch_size=4, seed=0, mirror=True)
        it = make_iterator(ds, global_batch_size=4, seed=0, mirror=True)
        for step, batch in enumerate(_take(it, 3)):
            raw, xflip = sample(step)
            for j in range(4):
                ex = ds.source[int(raw[j])]
                img = ex['image'][:, ::-1] if xflip[j] else ex['image']
                np.testing.assert_array_equal(batch['img'][j], img)
                np.testing.assert_array_equal(batch['c'][j], np.eye(10, dtype=np.float32)[ex['label']])
        it.close()


def test_to_global_array_on_a_device_mesh(labelled):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    ds = labelled[0]
    n = jax.device_count()                        # 8 simulated CPU devices (conftest)
    mesh = jax.make_mesh((n,), ('data',))
    host = next(make_iterator(ds, global_batch_size=n, seed=0, mirror=True))
    batch = to_global_array(host, NamedSharding(mesh, P('data')))
    assert batch['img'].shape == (n, R, R, 3) and batch['img'].dtype == np.uint8
    assert len(batch['img'].sharding.device_set) == n
    x = np.asarray(batch['img'].astype(np.float32) / 127.5 - 1)   # the trainer's conversion, on device
    np.testing.assert_allclose(x, host['img'] / 127.5 - 1, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(batch['c']), host['c'])


def test_loader_errors_reach_the_consumer():
    class Broken:
        num_images, image_shape, label_dim = 4, (R, R, 3), 0

        def read(self, i):
            raise OSError(f'disk gone while reading image {i}')
    it = make_iterator(Broken(), global_batch_size=2, prefetch=2)
    with pytest.raises(OSError, match='disk gone'):
        next(it)


def test_bad_arguments_and_paths(labelled, tmp_path):
    ds = labelled[0]
    with pytest.raises(ValueError, match=r'global_batch_size \(6\) must be divisible by process_count \(4\)'):
        make_iterator(ds, global_batch_size=6, process_count=4)
    with pytest.raises(ValueError, match='process_index'):
        make_iterator(ds, global_batch_size=4, process_index=2, process_count=2)
    (tmp_path / 'imgs').mkdir()
    with pytest.raises(DatasetError, match='not a dataset made by the dataset tool.*dataset_tool --source'):
        open_dataset(tmp_path / 'imgs')
    with pytest.raises(DatasetError, match='no such dataset directory'):
        open_dataset(str(tmp_path / 'missing'))

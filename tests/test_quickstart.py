"""The quickstart's data and config: scikit-learn's digits as a 16x16 labelled dataset, and a config that trains
on it as a class-conditional run (the training itself is what test_train_cli exercises end to end)."""

import numpy as np
import pytest

from sg3jax import quickstart
from sg3jax.data import open_dataset
from sg3jax.training import config as config_lib


def test_digits_dataset_and_config(tmp_path):
    dest = tmp_path / 'digits16'
    assert quickstart.make_digits_dataset(dest) == 1797
    ds = open_dataset(str(dest))
    assert (len(ds), ds.resolution, ds.num_channels, ds.label_dim) == (1797, 16, 1, 10)
    images, labels = zip(*(ds.read(i) for i in range(20)))
    images = np.stack(images)
    assert images.dtype == np.uint8 and images.max() == 255 and images.min() == 0    # strokes on black
    assert [int(np.argmax(l)) for l in labels[:10]] == list(range(10))               # load_digits' order
    assert quickstart.make_digits_dataset(dest) == 1797                                # reused, not rewritten
    run = config_lib.resolve(quickstart.quickstart_config('stylegan2', str(dest)), num_devices=1, c_dim=10,
                             img_channels=1)
    assert (run.resolution, run.c_dim, run.cfg, run.kimg) == (16, 10, 'stylegan2', 40.0)


def test_existing_other_dataset_is_refused(tmp_path):
    from sg3jax.data.writer import write_dataset
    dest = tmp_path / 'other'
    write_dataset(str(dest), [{'image': np.zeros([16, 16, 1], np.uint8), 'filename': 'x'}], resolution=16,
                  num_channels=1)
    with pytest.raises(ValueError, match='is not the 16x16 digits dataset'):
        quickstart.make_digits_dataset(dest)

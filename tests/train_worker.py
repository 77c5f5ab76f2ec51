"""Runs the real training loop on a tiny config with a deterministic in-memory dataset (for test_loop.py).

    python train_worker.py WORKDIR KIMG [CFG]

The dataset: 64 fixed 16x16 RGB images; global batch i is a fixed function of i, so a resumed run sees exactly
the batches an uninterrupted one would have seen next.
"""

import importlib.util
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, arg):
    spec = importlib.util.spec_from_file_location('cfg', REPO / 'configs' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def small_grid(resolution, c_dim):
    """The snapshot grid of the test runs, in place of `loop.grid_shape`: the official grid for 16 px is 32x32
    images, rendered at every snapshot, which on a 2-core CPU is most of a tiny run (about 15 s a grid, 4 grids a
    run). The tests check that grids are written, not their size."""
    return 4, 2


def make_data(run, start_step):
    images = np.random.RandomState(0).randint(0, 256, [64, 16, 16, 3]).astype(np.uint8)

    def gen():
        step = start_step
        while True:
            idx = np.random.RandomState(1000 + step).choice(64, run.batch_size, replace=False)
            yield {'img': images[idx], 'c': np.zeros([run.batch_size, 0], np.float32)}
            step += 1
    return gen()


if __name__ == '__main__':
    workdir, kimg = sys.argv[1], float(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else 'stylegan3_t'
    config = load_config(name, 'tiny')
    config.kimg = kimg
    from sg3jax.training import loop
    loop.grid_shape = small_grid
    loop.train(config, workdir, make_data=make_data, c_dim=0, img_channels=3,
               log=lambda s: print(s, flush=True))

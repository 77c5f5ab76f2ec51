"""Runs the real training loop on a tiny config with a deterministic in-memory dataset (for test_loop.py).

    python train_worker.py WORKDIR KIMG [--cfg NAME] [--pause-after-checkpoint STEP] [--nan-at-step STEP]
                                        [--devices N] [--batch N]

The dataset: 64 fixed 16x16 RGB images; global batch i is a fixed function of i, so a resumed run sees exactly
the batches an uninterrupted one would have seen next. The run uses ADA (aug='ada' with a short ada_kimg, so p
moves within the run), so the augmentation state is trained, checkpointed and resumed like the rest.

--pause-after-checkpoint STEP: once the checkpoint of STEP is committed, print `PAUSED STEP` and wait for a line
on stdin: the test sends its signal at that exact point (no polling, no race with a fast run), then lets the run
go on. --nan-at-step STEP: batch STEP holds NaN images (a corrupt input), so the run must stop with its message.
--devices N: N simulated CPU devices (default 1); --batch N: the global batch (default the tiny config's 8).
"""

import argparse
import importlib.util
import os
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


def make_data_fn(nan_at_step=None):
    images = np.random.RandomState(0).randint(0, 256, [64, 16, 16, 3]).astype(np.uint8)

    def make_data(run, start_step):
        def gen():
            step = start_step
            while True:
                idx = np.random.RandomState(1000 + step).choice(64, run.batch_size, replace=False)
                img = images[idx] if step != nan_at_step else np.full([run.batch_size, 16, 16, 3], np.nan,
                                                                       np.float32)
                yield {'img': img, 'c': np.zeros([run.batch_size, 0], np.float32)}
                step += 1
        return gen()
    return make_data


make_data = make_data_fn()


def worker_config(name='stylegan3_t'):
    config = load_config(name, 'tiny')
    config.update(dict(aug='ada', ada_kimg=0.1, target=0.0))    # p moves by 8 * 4 / 100 every 4 steps
    return config


def pause_after_checkpoint(ckpt, pause_step):
    """Wraps `ckpt.save` so that the run stops, committed, right after the checkpoint of `pause_step`."""
    save = ckpt.save

    def save_then_pause(manager, step, *args, **kwargs):
        save(manager, step, *args, **kwargs)
        if step == pause_step:
            manager.wait_until_finished()
            print(f'PAUSED {step}', flush=True)
            sys.stdin.readline()
    ckpt.save = save_then_pause


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('workdir')
    parser.add_argument('kimg', type=float)
    parser.add_argument('--cfg', default='stylegan3_t')
    parser.add_argument('--pause-after-checkpoint', type=int, default=None)
    parser.add_argument('--nan-at-step', type=int, default=None)
    parser.add_argument('--devices', type=int, default=1)
    parser.add_argument('--batch', type=int, default=None)
    args = parser.parse_args()
    # Simulated CPU devices: set before JAX starts its backend (the first device query, in loop.train).
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    config = worker_config(args.cfg)
    config.kimg = args.kimg
    if args.batch is not None:
        config.batch_size = args.batch
    from sg3jax.training import checkpoint as ckpt
    from sg3jax.training import loop
    loop.grid_shape = small_grid
    if args.pause_after_checkpoint is not None:
        pause_after_checkpoint(ckpt, args.pause_after_checkpoint)
    loop.train(config, args.workdir, make_data=make_data_fn(args.nan_at_step), c_dim=0, img_channels=3,
               log=lambda s: print(s, flush=True))

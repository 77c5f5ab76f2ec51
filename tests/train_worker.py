"""Runs the real training loop on a tiny config with a deterministic in-memory dataset (for test_loop.py).

    python train_worker.py WORKDIR KIMG [--cfg CFG] [--pause-after-checkpoint STEP] [--hang-in-save STEP]
                                        [--nan-at-step STEP] [--devices N] [--batch N] [--resume PATH]
                                        [--freezed N] [--metrics NAMES]

StyleGAN3's synthesis has 4 layers in these runs instead of the tiny config's (official) 14, built alike (as
tests/tiny_training.py: every kind of layer, the last critically sampled): `tiny_synthesis`. The dataset: 64 fixed
16x16 RGB images; global batch i is a fixed function of i, so a resumed run sees exactly the batches an
uninterrupted one would have seen next. The run uses ADA (aug='ada' with a short ada_kimg, so p
moves within the run), so the augmentation state is trained, checkpointed and resumed like the rest.

--pause-after-checkpoint STEP: once the checkpoint of STEP is committed, print `PAUSED STEP` and wait for a line
on stdin: the test sends its signal at that exact point (no polling, no race with a fast run), then lets the run
go on. --hang-in-save STEP: the asynchronous save of STEP stops after its files are written and before Orbax
commits it (renames its temporary directory into place); it prints `SAVING STEP` there and hangs, so that the
test kills the process while that save is in flight. --nan-at-step STEP: batch STEP holds NaN images (a corrupt
input), so the run must stop with its message.

--cfg CFG: the architecture (stylegan3-t, the default, stylegan3-r or stylegan2), in its tiny config. --devices N:
N simulated CPU devices (default 1; per process); --batch N: the global batch (default the tiny config's 8).
--resume PATH, --freezed N: config.resume and config.freezed (fine-tuning, Freeze-D). --metrics NAMES:
config.metrics, each computed on 8 samples.
--process-id I --num-processes N --port P: process I of an N-process jax.distributed job (gloo collectives,
coordinator on 127.0.0.1:P); each process loads only its slice of every batch and prints `GRID NAME process I`
for each sample grid it writes.
"""

import argparse
import functools
import os
import pathlib
import sys
import threading

import numpy as np


def small_grid(resolution, c_dim):
    """The snapshot grid of the test runs, in place of `loop.grid_shape`: the official grid for 16 px is 32x32
    images, rendered at every snapshot, which on a 2-core CPU is most of a tiny run (about 15 s a grid, 4 grids a
    run). The tests check that grids are written, not their size."""
    return 4, 2


def make_data_fn(nan_at_step=None, process_index=0, process_count=1):
    """make_data for loop.train: process `process_index` of `process_count` yields its equal slice of each
    global batch (the global batches do not depend on the process count)."""
    images = np.random.RandomState(0).randint(0, 256, [64, 16, 16, 3]).astype(np.uint8)

    def make_data(run, start_step):
        local = run.batch_size // process_count
        mine = slice(process_index * local, (process_index + 1) * local)

        def gen():
            step = start_step
            while True:
                idx = np.random.RandomState(1000 + step).choice(64, run.batch_size, replace=False)
                img = images[idx] if step != nan_at_step else np.full([run.batch_size, 16, 16, 3], np.nan,
                                                                       np.float32)
                yield {'img': img[mine], 'c': np.zeros([local, 0], np.float32)}
                step += 1
        return gen()
    return make_data


make_data = make_data_fn()


def tiny_synthesis(resolve):
    """`config.resolve` for these runs: StyleGAN3's synthesis with 4 layers. With the official 14, tracing,
    compiling and running their programs took a run 29 s instead of 21 with the compilation cache warm, 72 instead
    of 59 cold (2-core host). What the tests of the loop check (files, resumption, messages) does not depend on
    the depth. StyleGAN2 runs are left as they are."""
    from tiny_training import with_sg3_layers
    return lambda config, *args, **kwargs: with_sg3_layers(resolve(config, *args, **kwargs), 4)


def worker_config(cfg='stylegan3-t'):
    from sg3jax.training import config as config_lib
    config = config_lib.get_config(cfg, 'tiny')
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


def hang_in_save(hang_step):
    """Stops Orbax's commit of `hang_step` (in the save's background thread) for good, after announcing it."""
    import orbax.checkpoint as ocp
    temporary_path = ocp.path.atomicity.AtomicRenameTemporaryPath
    finalize = temporary_path.finalize

    async def announce_then_hang(self):
        if self.get_final().name == str(hang_step):
            print(f'SAVING {hang_step} {self.get()}', flush=True)
            threading.Event().wait()
        await finalize(self)
    temporary_path.finalize = announce_then_hang


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('workdir')
    parser.add_argument('kimg', type=float)
    parser.add_argument('--cfg', default='stylegan3-t')
    parser.add_argument('--pause-after-checkpoint', type=int, default=None)
    parser.add_argument('--hang-in-save', type=int, default=None)
    parser.add_argument('--nan-at-step', type=int, default=None)
    parser.add_argument('--devices', type=int, default=1)
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--resume', default='')
    parser.add_argument('--freezed', type=int, default=0)
    parser.add_argument('--metrics', default='')
    parser.add_argument('--process-id', type=int, default=0)
    parser.add_argument('--num-processes', type=int, default=1)
    parser.add_argument('--port', type=int, default=None)
    args = parser.parse_args()
    # Simulated CPU devices: set before JAX starts its backend (the first device query, in loop.train).
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    if args.num_processes > 1:
        import jax
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(coordinator_address=f'127.0.0.1:{args.port}', num_processes=args.num_processes,
                                   process_id=args.process_id)
    config = worker_config(args.cfg)
    config.kimg = args.kimg
    if args.batch is not None:
        config.batch_size = args.batch
    config.resume, config.freezed, config.metrics = args.resume, args.freezed, args.metrics
    import sg3jax.metrics as metrics_lib
    metrics_lib.calc_metric = functools.partial(metrics_lib.calc_metric, num_gen=8, batch_size=8)
    from sg3jax.training import checkpoint as ckpt
    from sg3jax.training import config as config_lib
    from sg3jax.training import loop
    config_lib.resolve = tiny_synthesis(config_lib.resolve)
    loop.grid_shape = small_grid
    save_image_grid = loop.save_image_grid

    def save_and_announce(images, path, grid):
        save_image_grid(images, path, grid)
        print(f'GRID {pathlib.Path(path).name} process {args.process_id}', flush=True)
    loop.save_image_grid = save_and_announce
    if args.pause_after_checkpoint is not None:
        pause_after_checkpoint(ckpt, args.pause_after_checkpoint)
    if args.hang_in_save is not None:
        hang_in_save(args.hang_in_save)
    loop.train(config, args.workdir, make_data=make_data_fn(args.nan_at_step, args.process_id, args.num_processes),
               c_dim=0, img_channels=3, log=lambda s: print(s, flush=True))

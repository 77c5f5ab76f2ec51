"""Train StyleGAN3-T/R or StyleGAN2 from a config (entry point; the logic lives in sg3jax.training).

    python -m sg3jax.train --config configs/stylegan3_t.py:preset=ffhq1024,data=/data/ffhq --workdir DIR \
        [--config.batch_size=64 ...] [--dry_run]

Training runs `sg3jax.training.loop.train` on the dataset of `config.data`; re-running with the same workdir
resumes from its newest checkpoint. `--dry_run` prints the resolved config (every derived value), then compiles
each update phase ahead of time for
the global batch on the devices JAX sees, and prints its memory and FLOPs, without allocating the state or
training. On a pod, set SG3JAX_DISTRIBUTED=1 on every host (see launch/README.md) so the processes join one
`jax.distributed` job first.
"""

import json
import sys

import jax
from absl import app, flags
from jax.sharding import AxisType
from ml_collections import config_flags

from sg3jax import data as data_lib
from sg3jax import distributed
from sg3jax.planning import plan as plan_lib
from sg3jax.training import checkpoint, loop, transfer
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file: configs/<cfg>.py[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, sample grids.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the resolved config and the compiled memory use; exit.')


def dataset_properties(config):
    """(c_dim, img_channels) of the configured dataset; (0, 3) when there is no dataset (dry runs)."""
    if not config.data:
        if config.cond:
            raise ValueError('config.cond=True needs config.data to know the label dimension')
        return 0, 3
    ds = data_lib.open_dataset(config.data, data_dir=config.data_dir or None)
    if ds.resolution != config.resolution:
        raise ValueError(f'config.resolution ({config.resolution}) does not match the dataset {config.data!r} '
                         f'({ds.resolution}x{ds.resolution})')
    return ds.label_dim, ds.num_channels


def dry_run_phases(config):
    """Resolve the config for the devices JAX sees, print it, and compile every update phase for the global batch
    (the same compile as `sg3jax.planning.plan --topology=local`), printing each phase's memory and FLOPs."""
    c_dim, img_channels = dataset_properties(config)
    run = config_lib.resolve(config, jax.device_count(), c_dim=c_dim, img_channels=img_channels)
    if jax.process_index() == 0:
        print(json.dumps(run.to_dict(), indent=2, sort_keys=True, default=str))
    state = jax.eval_shape(lambda k: steps_lib.init_state(k, run), jax.random.key(0))
    n_params = sum(x.size for part in ('G', 'D') for x in jax.tree.leaves(state[part]))
    print(f'# {jax.device_count()} x {jax.devices()[0].device_kind}, global batch {run.batch_size} '
          f'({run.batch_per_device}/device), {n_params / 1e6:.2f} M parameters (G + D)')
    # The trainer's device order (jax.make_mesh), so the compiled programs are the ones training will run.
    devices = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(AxisType.Auto,)).devices.flatten()
    fmt = plan_lib.fmt_bytes
    phases = plan_lib.compile_phases(run, list(devices), log=lambda line: print(f'# {line}', flush=True))
    print('| phase | arguments | outputs | temporaries | code | GFLOP/step |')
    print('|---|---|---|---|---|---|')
    for name, p in phases.items():
        if p.oom:
            print(f'| {name} | {fmt(p.argument_bytes)} | - | {fmt(p.temp_bytes)} (refused) | - | - |', flush=True)
        else:
            print(f'| {name} | {fmt(p.argument_bytes)} | {fmt(p.output_bytes)} | {fmt(p.temp_bytes)} | '
                  f'{fmt(p.code_bytes)} | {p.flops / 1e9:.1f} |', flush=True)
    refused = {name: p.oom.splitlines()[0] for name, p in phases.items() if p.oom}
    if refused:
        # The launch scripts stop on a failed dry run: a program the compiler refuses must not start training.
        sys.exit(f'--dry_run: the compiler refused {sorted(refused)} for lack of device memory: '
                 f'{next(iter(refused.values()))} (smaller --config.batch_size, --config.precision=bfloat16 or '
                 f'--config.remat=True; python -m sg3jax.planning.plan --topology=local says which fits)')


def make_data_fn(config):
    """`make_data(run, start_step)` for the loop: this process's slices of the global batches, from the dataset
    pipeline of sg3jax.data, positioned after `start_step` batches."""
    ds = data_lib.open_dataset(config.data, data_dir=config.data_dir or None)

    def make_data(run, start_step):
        return data_lib.make_iterator(ds, global_batch_size=run.batch_size, seed=run.seed, mirror=run.mirror,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      start_step=start_step, use_labels=bool(run.c_dim))
    return make_data


def run_trainer(config, workdir, dry_run=False):
    """The trainer: checks the arguments, the config and the dataset before anything compiles or is written (a
    bad one is one line naming the field or path, exit status 2), then trains or dry-runs; a restart that its
    workdir's checkpoint refuses (config.ResumeConflict), a workdir none of whose checkpoints restores
    (checkpoint.NoUsableCheckpoint) and a config.resume source that cannot be read or does not fit
    (transfer.ResumeSourceError) are such a line too. Returns the exit status."""
    try:
        if not dry_run and not workdir:
            raise ValueError('--workdir is required (the run directory: checkpoints, logs, sample grids)')
        config_lib.validate(config, jax.device_count(), require_data=not dry_run)
        c_dim, img_channels = dataset_properties(config)
        config_lib.resolve(config, jax.device_count(), c_dim=c_dim, img_channels=img_channels)
    except (ValueError, NotImplementedError, data_lib.DatasetError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if dry_run:
        dry_run_phases(config)
        return 0
    try:
        loop.train(config, workdir, make_data=make_data_fn(config), c_dim=c_dim, img_channels=img_channels)
    except (config_lib.ResumeConflict, checkpoint.NoUsableCheckpoint, transfer.ResumeSourceError) as e:
        # Found once the workdir's checkpoints or the resume source are read, still before training.
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


def main(argv):
    del argv
    distributed.maybe_initialize()
    return run_trainer(_CONFIG.value, _WORKDIR.value, dry_run=_DRY_RUN.value)


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)

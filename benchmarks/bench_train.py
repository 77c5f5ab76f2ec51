"""Training throughput: images/s and sec/kimg of the real update steps (all phases, lazy regularisation included).

    python benchmarks/bench_train.py                          # tiny and small, T and SG2, 1 and 8 devices
    python benchmarks/bench_train.py --configs small --cfgs stylegan3-t --devices 8 --cycles 2

On a CPU host the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count, set here before JAX
starts), so "8 devices" there measures the sharding overhead on the same cores, not a speed-up; on an
accelerator host JAX's real devices are used. Configs:
  tiny   the test config (sg3jax.training.config.apply_tiny): 16 px, 32 channels max, batch 8 (32 on 8 devices,
         as minibatch-std needs 4 samples per device)
  small  the quickstart config (apply_quickstart): 16 px, 64 channels max, batch 32
A "cycle" is lcm(G_reg_interval, D_reg_interval) minibatches (16 for these configs), so the R1 and path-length
phases weigh in as in training. Timing: one warm-up cycle (compiles every phase), then the median over
`--cycles` timed cycles, each synchronised with block_until_ready. The state is created on the devices; batches
are random uint8 images put on the mesh once per step, as the trainer does.
"""

import argparse
import math
import os
import statistics
import sys
import time

if 'jax' not in sys.modules:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib


def make_run(cfg, which, num_devices):
    config = config_lib.base_config(cfg)
    if which == 'tiny':
        config_lib.apply_tiny(config)
    elif which == 'small':
        config_lib.apply_quickstart(config)
        config.cond = False
    else:
        raise ValueError(f'unknown config {which!r}; expected tiny or small')
    config.batch_gpu = 0
    # Minibatch-std needs >= mbstd_group samples per device: the tiny batch of 8 grows to 32 on 8 devices.
    config.batch_size = max(config.batch_size, config.mbstd_group * num_devices)
    return config_lib.resolve(config, num_devices=num_devices)


def bench(cfg, which, num_devices, cycles):
    run = make_run(cfg, which, num_devices)
    mesh = jax.make_mesh((num_devices,), ('data',), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:num_devices])
    steps = steps_lib.make_steps(run, mesh)
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
    state = jax.jit(lambda k: steps_lib.init_state(k, run), out_shardings=repl)(jax.random.key(0))
    key = jax.random.key(1)
    rng = np.random.RandomState(0)
    n, r = run.batch_size, run.resolution
    cycle = math.lcm(*(interval for _, interval in run.phases))     # every phase runs in a cycle

    def one_cycle(step):
        for _ in range(cycle):
            img = rng.randint(0, 256, (n, r, r, 3)).astype(np.float32) / 127.5 - 1
            batch = jax.device_put({'img': img, 'c': np.zeros([n, 0], np.float32)}, data)
            state_box[0], _ = steps_lib.train_step(state_box[0], batch, key, run, steps, step)
            step += 1
        jax.block_until_ready(state_box[0])
        return step

    state_box = [state]
    t0 = time.perf_counter()
    step = one_cycle(0)                         # warm-up: compiles every phase
    compile_sec = time.perf_counter() - t0
    times = []
    for _ in range(cycles):
        t0 = time.perf_counter()
        step = one_cycle(step)
        times.append(time.perf_counter() - t0)
    sec_per_step = statistics.median(times) / cycle
    return run, sec_per_step, compile_sec


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', default='tiny,small')
    p.add_argument('--cfgs', default='stylegan3-t,stylegan2')
    p.add_argument('--devices', default='1,8')
    p.add_argument('--cycles', type=int, default=2, help='timed cycles of lcm(reg intervals) steps')
    args = p.parse_args()
    dev = jax.devices()[0]
    print(f'# {jax.device_count()} x {dev.device_kind} ({dev.platform}), jax {jax.__version__}')
    print('| config | cfg | devices | batch | ms/step | img/s | sec/kimg | first cycle (compile) s |')
    print('|---|---|---|---|---|---|---|---|')
    for which in args.configs.split(','):
        for cfg in args.cfgs.split(','):
            for nd in (int(d) for d in args.devices.split(',')):
                if nd > jax.device_count():
                    print(f'| {which} | {cfg} | {nd} | skipped: only {jax.device_count()} devices |')
                    continue
                run, sec, comp = bench(cfg, which, nd, args.cycles)
                print(f'| {which} | {cfg} | {nd} | {run.batch_size} | {sec * 1e3:.1f} | '
                      f'{run.batch_size / sec:.1f} | {sec * 1000 / run.batch_size:.1f} | {comp:.1f} |', flush=True)


if __name__ == '__main__':
    main()

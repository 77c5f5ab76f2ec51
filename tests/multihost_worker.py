"""One process of the multi-host test (run by test_multihost.py, not collected by pytest).

    python multihost_worker.py PROCESS_ID NUM_PROCESSES DEVICES_PER_PROCESS PORT OUT.npz

Builds a 4-device `data` mesh over all processes, feeds each process only its slice of the global batch
(jax.make_array_from_process_local_data), runs two training steps of a tiny StyleGAN2 (both lazy regularisers
run at step 0), and writes the replicated parameters and the metrics.
"""

import sys

pid, nproc, ndev, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', ndev)
if nproc > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, __file__.rsplit('/', 1)[0])
from tiny_training import batch as _batch, tiny_run  # noqa: E402
from sg3jax.networks.state_dicts import flatten  # noqa: E402
from sg3jax.training import steps as steps_lib  # noqa: E402

assert jax.device_count() == 4, jax.device_count()
run = tiny_run(batch_size=16, cfg='stylegan2', c_dim=3)
mesh = jax.make_mesh((4,), ('data',), axis_types=(AxisType.Auto,))
repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
steps = steps_lib.make_steps(run, mesh)
state = jax.jit(lambda k: steps_lib.init_state(k, run), out_shardings=repl)(jax.random.key(0))
local = run.batch_size // jax.process_count()
metrics = {}
for i in range(2):
    full = _batch(run.batch_size, 3, seed=i)                       # every process knows the recipe ...
    mine = {k: v[pid * local:(pid + 1) * local] for k, v in full.items()}   # ... but loads only its slice
    batch = {k: jax.make_array_from_process_local_data(data, v) for k, v in mine.items()}
    state, m = steps_lib.train_step(state, batch, jax.random.key(1), run, steps, i)
    metrics.update({f'step{i}/{k}': np.asarray(v) for k, v in m.items()})
params = {f'{part}/{k}': np.asarray(v) for part in ('G', 'D', 'G_ema', 'buffers')
          for k, v in flatten(state[part]).items()}
np.savez(out, **params, **metrics)
print(f'process {pid}/{nproc} holding {jax.local_device_count()}/{jax.device_count()} devices: done', flush=True)

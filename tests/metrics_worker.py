"""One process of the multi-process metrics test (run by test_multihost.py, not collected by pytest).

    python metrics_worker.py PROCESS_ID NUM_PROCESSES DEVICES_PER_PROCESS PORT DATASET NETWORK CACHE_DIR RUN_DIR \
        OUT.json

Computes FID, KID, precision/recall, IS and PPL of a tiny conditional StyleGAN2 (tiny_metrics.py; its weights
read from the export NETWORK) on DATASET with the stand-in feature networks, with the dataset statistics cached
under CACHE_DIR (`{pid}` in it is replaced by
the process id: a cache directory that is not shared), FID a second time (from that cache), reports each result
the way the trainer does (process 0 alone, into RUN_DIR), then FID once more through the command line
(`calc_metrics.main` on NETWORK, results into RUN_DIR/cli), and writes the results this process computed to
OUT.json. The weights come from the file, not from `tiny_generator` here, so that both paths see bitwise the
weights the test wrote: initialised in another process, under other XLA flags (subprocess_env), they differ in
the last bits (the FIDs then differ at 1e-6).
"""

import functools
import json
import sys

pid, nproc, ndev, port = (int(a) for a in sys.argv[1:5])
dataset, network, cache_dir, run_dir, out = sys.argv[5:10]

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', ndev)
if nproc > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=nproc, process_id=pid)

sys.path.insert(0, __file__.rsplit('/', 1)[0])
from tiny_metrics import fake_detectors  # noqa: E402
from sg3jax import calc_metrics  # noqa: E402
from sg3jax.metrics import metric_main  # noqa: E402
from sg3jax.sampling.export import restore_generator  # noqa: E402

# 20 generated images in batches of 8: the last batch is part padding, on every device count.
kw = dict(G=restore_generator(network), dataset=dataset, cache_dir=cache_dir.format(pid=pid),
          detectors=fake_detectors(), num_gen=20, batch_size=8, progress=False)
results = {}
for name in ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'ppl2_wend', 'fid50k_full']:
    r = metric_main.calc_metric(name, **kw)
    results.setdefault(name, []).append(r['results'])
    if jax.process_index() == 0:
        metric_main.report_metric(r, run_dir=run_dir, snapshot_pkl=f'{run_dir}/network-snapshot-000000')
# The command line, with the stand-in feature networks and the batch above (which it has no flag for).
metric_main.calc_metric = functools.partial(metric_main.calc_metric, detectors=kw['detectors'], batch_size=8)
assert calc_metrics.main(['--network', network, '--data', dataset, '--metrics', 'fid50k_full', '--num-gen', '20',
                          '--cache-dir', cache_dir.format(pid=pid), '--run-dir', f'{run_dir}/cli',
                          '--verbose', '0']) == 0
with open(out, 'w') as f:
    json.dump(dict(results=results, num_gpus=r['num_gpus']), f)
print(f'process {pid}/{nproc} holding {jax.local_device_count()}/{jax.device_count()} devices: done', flush=True)

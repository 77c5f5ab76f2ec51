"""Compute quality metrics of a generator (official `calc_metrics.py`).

    python -m sg3jax.calc_metrics --network /runs/x/network-snapshot-000100 --data /data/ffhq-256 \\
        --metrics fid50k_full,kid50k_full --mirror 1 --detector-dir ~/sg3jax-detectors

The network is loaded with `sg3jax.sampling.load_generator` (our exports, training workdirs, NVIDIA pickles).
Results print as the official JSON lines, and are appended to `metric-<name>.jsonl` in the run directory when
the network lies in one (a directory with training_options.json or stats.jsonl), or in --run-dir.
Feature networks: see `python -m sg3jax.convert_feature_nets --help`.

On several hosts (a TPU pod, a SLURM allocation), run the same command on every host with SG3JAX_DISTRIBUTED=1:
the hosts join one jax.distributed job, each generates and embeds its share of the images, and process 0 alone
prints and writes the results (the network, the dataset and --detector-dir must be readable on every host).
"""

import argparse
import os
import sys

import jax

from sg3jax import distributed
from sg3jax.metrics import metric_main
from sg3jax.sampling.cli import ToolError
from sg3jax.sampling.load import load_generator


def _bool(s):
    if s.lower() in ('1', 'true', 'yes'):
        return True
    if s.lower() in ('0', 'false', 'no'):
        return False
    raise argparse.ArgumentTypeError(f'expected 0/1, got {s!r}')


def _find_run_dir(network):
    d = os.path.dirname(os.path.abspath(network.rstrip('/')))
    for marker in ('training_options.json', 'stats.jsonl'):
        if os.path.isfile(os.path.join(d, marker)):
            return d
    return None


def main(argv=None):
    distributed.maybe_initialize()
    p = argparse.ArgumentParser(prog='python -m sg3jax.calc_metrics', description=__doc__.split('\n\n')[0])
    p.add_argument('--network', required=True, metavar='PATH', help='generator export or network pickle')
    p.add_argument('--metrics', default='fid50k_full', metavar='A,B,C', help='comma-separated metric names')
    p.add_argument('--data', metavar='DIR', help='dataset (made by sg3jax.dataset_tool)')
    p.add_argument('--mirror', type=_bool, default=False, metavar='0|1', help='dataset x-flips (legacy metrics)')
    p.add_argument('--detector-dir', metavar='DIR|URL', help='converted feature networks (default: $SG3JAX_DETECTORS)')
    p.add_argument('--cache-dir', metavar='DIR', help='dataset statistics / download cache (~/.cache/sg3jax)')
    p.add_argument('--run-dir', metavar='DIR', help='where to append metric-*.jsonl (default: the network\'s run)')
    p.add_argument('--num-devices', type=int, metavar='N', help='devices to shard over (default: all)')
    p.add_argument('--num-gen', type=int, metavar='N', help='override the sample count (quick checks)')
    p.add_argument('--verbose', type=_bool, default=True, metavar='0|1')
    args = p.parse_args(argv)

    metrics = [m for m in args.metrics.split(',') if m and m.lower() != 'none']
    bad = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if bad:
        p.error(f'--metrics: unknown {", ".join(bad)}; valid: {", ".join(metric_main.list_valid_metrics())}')
    if not os.path.exists(args.network):
        p.error(f'--network: {args.network} does not exist')
    verbose = args.verbose and jax.process_index() == 0
    if verbose:
        print(f'Loading network from "{args.network}"...', file=sys.stderr)
    try:
        G = load_generator(args.network)
    except ToolError as e:
        p.error(str(e))
    run_dir = args.run_dir or _find_run_dir(args.network)
    for metric in metrics:
        if verbose:
            print(f'Calculating {metric}...', file=sys.stderr)
        try:
            result = metric_main.calc_metric(metric, G=G, dataset=args.data, mirror=args.mirror,
                                             num_devices=args.num_devices, cache_dir=args.cache_dir,
                                             detector_dir=args.detector_dir, num_gen=args.num_gen,
                                             progress=verbose)
        except (ValueError, FileNotFoundError) as e:   # bad --num-devices or --data; no feature networks
            p.error(f'{metric}: {e}')
        if jax.process_index() == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=os.path.abspath(args.network))
    return 0


if __name__ == '__main__':
    sys.exit(main())

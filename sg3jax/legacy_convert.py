"""Converts an official StyleGAN3 / StyleGAN2-ADA network pickle into an sg3jax generator export.

    python -m sg3jax.legacy_convert --network stylegan3-t-ffhqu-256x256.pkl --outdir exports/sg3t-ffhqu-256
    python -m sg3jax.legacy_convert --network network-snapshot-005000.pkl --outdir out/G --which G

The pickle is read by `sg3jax.legacy.load_network_pkl`, which runs no code from it. The result is the directory
that `sg3jax.sampling.restore_generator` loads (format 'sg3jax-generator-v1'): the chosen network's
params and buffers and its official constructor kwargs as the G config. `G_ema` (the default) is the network
NVIDIA's own tools sample from (gen_images.py).
"""

import argparse
import os
import sys

from sg3jax import legacy
from sg3jax.sampling.export import export_generator


def _parse(argv):
    p = argparse.ArgumentParser(prog='python -m sg3jax.legacy_convert', description=__doc__.split('\n\n')[0])
    p.add_argument('--network', required=True, help='official network pickle (.pkl)')
    p.add_argument('--outdir', required=True, help='export directory to write (replaced atomically if present)')
    p.add_argument('--which', default='G_ema', choices=['G_ema', 'G'], help='which generator (default G_ema)')
    return p.parse_args(argv)


def convert_pkl(network, outdir, which='G_ema'):
    """Writes the export; returns the G config. Raises legacy.NetworkPickleError if `which` is absent."""
    nets = legacy.load_network_pkl(network)
    if which not in nets:
        raise legacy.NetworkPickleError(f'{network}: has no {which!r} network (it has '
                                        f'{", ".join(k for k in ("G", "D", "G_ema") if k in nets)})')
    G = nets[which]
    extra = {'source_pkl': os.path.abspath(os.fspath(network)), 'source_network': which}
    tsk = nets.get('training_set_kwargs')
    if isinstance(tsk, dict) and all(isinstance(v, (str, int, float, bool, type(None))) for v in tsk.values()):
        extra['training_set_kwargs'] = tsk
    export_generator(outdir, G['params'], G['buffers'], G['cfg'], extra=extra)
    return G['cfg']


def main(argv=None):
    args = _parse(argv)
    try:
        cfg = convert_pkl(args.network, args.outdir, args.which)
    except (OSError, ValueError, legacy.ForbiddenGlobal) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.outdir}: {args.which} of {args.network} ({cfg["class_name"]}, '
          f'{cfg["img_resolution"]}x{cfg["img_resolution"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Generate images from a trained generator (the official NVlabs/stylegan3 gen_images.py, in JAX).

    python -m sg3jax.gen_images --network ~/runs/ffhq/network-snapshot-005000 --seeds 0-31,40 --trunc 0.7 \
        --outdir out
    python -m sg3jax.gen_images --network stylegan3-r-afhqv2-512x512.pkl --seeds 2 --translate 0.3,1 \
        --rotate 10 --outdir out

Writes OUTDIR/seed0000.png, ... (official names: seed{seed:04d}.png), each atomically. --network takes an sg3jax
export, a training workdir (its newest network-snapshot-*) or an NVIDIA .pkl. Seed s uses the official
z = np.random.RandomState(s).randn(1, z_dim), so seeds pick the same latents as the official tool; images are
rendered in jitted batches of --batch-size.

Differences from the official tool, all options: --trunc-cutoff (truncate only the first N ws; default all);
--trunc-center=class (conditional networks: truncate toward the mean w of --class, estimated from 10,000 mapped
z, instead of the official global w_avg); --translate/--rotate on a StyleGAN2 network is an error (the official
tool ignores them); --noise-mode random (StyleGAN2) draws noise from jax.random.key(seed).
"""

import argparse
import os
import sys

from tqdm import tqdm

from sg3jax import sampling, utils
from sg3jax.sampling import cli, load


def build_parser():
    p = argparse.ArgumentParser(prog='python -m sg3jax.gen_images', description=__doc__.split('\n\n')[0])
    p.add_argument('--network', required=True, metavar='PATH',
                   help='sg3jax export, training workdir, or NVIDIA .pkl')
    p.add_argument('--seeds', required=True, help="list of random seeds, e.g. '0,1,4-6'")
    p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0, help='truncation psi (default 1)')
    p.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, default=None, metavar='N',
                   help='truncate only the first N ws (default: all)')
    cli.add_trunc_center(p)
    p.add_argument('--class', dest='class_idx', type=int, default=None, help='class label (conditional networks)')
    p.add_argument('--noise-mode', choices=['const', 'random', 'none'], default='const',
                   help='noise mode (StyleGAN2; default const)')
    p.add_argument('--translate', default='0,0', metavar='VEC2', help="translate XY-coordinate, e.g. '0.3,1'")
    p.add_argument('--rotate', type=float, default=0.0, metavar='ANGLE', help='rotation angle in degrees')
    p.add_argument('--outdir', required=True, metavar='DIR', help='where to save the output images')
    p.add_argument('--batch-size', type=int, default=16, help='images per jitted batch (default 16)')
    return p


def generate_images(G, seeds, outdir, truncation_psi=1.0, truncation_cutoff=None, class_idx=None,
                    noise_mode='const', translate=(0.0, 0.0), rotate=0.0, batch_size=16, progress=True,
                    trunc_center='w_avg'):
    """Writes outdir/seed{seed:04d}.png for every seed; returns the paths. G: (params, buffers, cfg)."""
    G = sampling.as_generator(G)
    seeds = cli.parse_seeds(seeds)
    translate = cli.parse_vec2(translate)
    if truncation_cutoff is not None and truncation_cutoff < 0:
        raise cli.ToolError(f'--trunc-cutoff must be >= 0, got {truncation_cutoff}')
    if batch_size < 1:
        raise cli.ToolError(f'--batch-size must be >= 1, got {batch_size}')
    class_idx = sampling.check_class(G, class_idx)
    transform = None
    if G.spec.arch == 'stylegan3':
        # Official: the input transform is always set, to the inverse of make_transform (identity by default).
        transform = sampling.input_transform(translate, rotate)
    elif translate != (0.0, 0.0) or rotate != 0:
        raise cli.ToolError('--translate/--rotate move the StyleGAN3 input; this is a StyleGAN2 network')
    center = sampling.truncation_center(G, class_idx, truncation_psi, trunc_center)
    os.makedirs(outdir, exist_ok=True)
    seeds = list(dict.fromkeys(seeds))       # a repeated seed is one file
    paths = []
    with tqdm(total=len(seeds), desc='gen_images', unit='img', disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(seeds), batch_size):
            chunk = seeds[i:i + batch_size]
            imgs = sampling.render_seeds(G, chunk, truncation_psi, truncation_cutoff, class_idx, noise_mode,
                                         transform, center=center, batch_size=batch_size)
            for seed, img in zip(chunk, imgs):
                path = os.path.join(outdir, f'seed{seed:04d}.png')
                utils.save_png(path, img)
                paths.append(path)
            bar.update(len(chunk))
    return paths


def main(argv=None):
    parser = build_parser()
    args = cli.parse_args(parser, argv)

    def run(a):
        cli.parse_seeds(a.seeds)                   # refuse bad flags before loading anything
        cli.parse_vec2(a.translate)
        print(f'Loading networks from "{a.network}"...', file=sys.stderr)
        G = sampling.Generator(*load.load_generator(a.network))
        return generate_images(G, a.seeds, a.outdir, a.truncation_psi, a.truncation_cutoff, a.class_idx,
                               a.noise_mode, a.translate, a.rotate, a.batch_size, trunc_center=a.trunc_center)
    return cli.run_main(parser, run, args)


if __name__ == '__main__':
    main()

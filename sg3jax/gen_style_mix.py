"""Style-mixing image matrix (the official stylegan2-ada-pytorch style_mixing.py, in JAX).

    python -m sg3jax.gen_style_mix --network ~/runs/ffhq --rows 85,100,75 --cols 55,821,1789 --styles 0-6 \
        --trunc 1 --outdir out

For every (row seed, column seed) pair the image takes the row seed's ws and replaces the ws listed in --styles
by the column seed's. Writes, as the official tool, OUTDIR/{row}-{col}.png for every pair, {s}-{s}.png for every
seed alone (the matrix's header row and column), and OUTDIR/grid.png: a black top-left cell, the column seeds'
images along the top, the row seeds' down the left, the mixes inside. Truncation applies to all ws, toward w_avg
(official); for conditional networks (--class, which the official tool does not offer) --trunc-center=class
truncates toward that class's mean w instead.

--rows/--cols/--styles take the gen_images seed syntax ('0,1,4-6'), a superset of the official tool's (either a
list or one range). All PNGs are written atomically.
"""

import argparse
import os
import sys

import numpy as np

from sg3jax import sampling, utils
from sg3jax.sampling import cli, load


def build_parser():
    p = argparse.ArgumentParser(prog='python -m sg3jax.gen_style_mix', description=__doc__.split('\n\n')[0])
    p.add_argument('--network', required=True, metavar='PATH',
                   help='sg3jax export, training workdir, or NVIDIA .pkl')
    p.add_argument('--rows', dest='row_seeds', required=True, help='random seeds to use for image rows')
    p.add_argument('--cols', dest='col_seeds', required=True, help='random seeds to use for image columns')
    p.add_argument('--styles', dest='col_styles', default='0-6', help='style layer range (default 0-6)')
    p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0, help='truncation psi (default 1)')
    p.add_argument('--noise-mode', choices=['const', 'random', 'none'], default='const',
                   help='noise mode (StyleGAN2; default const)')
    cli.add_trunc_center(p)
    p.add_argument('--class', dest='class_idx', type=int, default=None, help='class label (conditional networks)')
    p.add_argument('--outdir', required=True, metavar='DIR')
    p.add_argument('--batch-size', type=int, default=16, help='images per jitted batch (default 16)')
    return p


def generate_style_mix(G, row_seeds, col_seeds, col_styles, outdir, truncation_psi=1.0, noise_mode='const',
                       class_idx=None, batch_size=16, trunc_center='w_avg'):
    """Writes the official style-mixing outputs (module docstring) to `outdir`; returns the grid's path."""
    G = sampling.as_generator(G)
    row_seeds = cli.parse_seeds(row_seeds, '--rows')
    col_seeds = cli.parse_seeds(col_seeds, '--cols')
    col_styles = cli.parse_range(col_styles, '--styles')
    num_ws = G.spec.num_ws
    bad = [s for s in col_styles if not 0 <= s < num_ws]
    if bad or not col_styles:
        raise cli.ToolError(f'--styles: style indices must be in 0..{num_ws - 1} (this network has {num_ws} ws), '
                            f'got {bad[0] if bad else "none"}')
    class_idx = sampling.check_class(G, class_idx)
    os.makedirs(outdir, exist_ok=True)

    # W vectors of every seed, truncated over all ws as the official `w_avg + (w - w_avg) * psi`.
    all_seeds = list(dict.fromkeys(row_seeds + col_seeds))
    center = sampling.truncation_center(G, class_idx, truncation_psi, trunc_center)
    z = sampling.z_from_seeds(all_seeds, G.spec.z_dim)
    all_w = sampling.mapping(G, z, sampling.labels(G, class_idx, len(z)), truncation_psi, None, center, batch_size)
    w_dict = dict(zip(all_seeds, all_w))

    # The seeds alone, then every mix; each image's random noise (StyleGAN2) is keyed by its row seed.
    keys = [(s, s) for s in all_seeds] + [(r, c) for r in row_seeds for c in col_seeds]
    ws = []
    for r, c in keys:
        w = w_dict[r].copy()
        w[col_styles] = w_dict[c][col_styles]
        ws.append(w)
    imgs = sampling.synthesis(G, np.stack(ws), noise_mode=noise_mode, noise_seeds=[r for r, _ in keys],
                              batch_size=batch_size)
    image_dict = dict(zip(keys, imgs))          # a mix (s, s) overwrites the identical seed image, as officially

    for (r, c), img in image_dict.items():
        utils.save_png(os.path.join(outdir, f'{r}-{c}.png'), img)

    res = G.spec.img_resolution
    ch = imgs.shape[-1]
    canvas = np.zeros([res * (len(row_seeds) + 1), res * (len(col_seeds) + 1), ch], np.uint8)   # black
    for ri, r in enumerate([None] + row_seeds):
        for ci, c in enumerate([None] + col_seeds):
            if ri == 0 and ci == 0:
                continue
            key = (c, c) if ri == 0 else (r, r) if ci == 0 else (r, c)
            canvas[res * ri:res * (ri + 1), res * ci:res * (ci + 1)] = image_dict[key]
    path = os.path.join(outdir, 'grid.png')
    utils.save_png(path, canvas)
    return path


def main(argv=None):
    parser = build_parser()
    args = cli.parse_args(parser, argv)

    def run(a):
        cli.parse_seeds(a.row_seeds, '--rows')
        cli.parse_seeds(a.col_seeds, '--cols')
        cli.parse_range(a.col_styles, '--styles')
        print(f'Loading networks from "{a.network}"...', file=sys.stderr)
        G = sampling.Generator(*load.load_generator(a.network))
        return generate_style_mix(G, a.row_seeds, a.col_seeds, a.col_styles, a.outdir, a.truncation_psi,
                                  a.noise_mode, a.class_idx, a.batch_size, a.trunc_center)
    return cli.run_main(parser, run, args)


if __name__ == '__main__':
    main()

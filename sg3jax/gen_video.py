"""Render a latent interpolation video (the official NVlabs/stylegan3 gen_video.py, in JAX).

    python -m sg3jax.gen_video --network ~/runs/ffhq --seeds 0-31 --grid 4x2 --trunc 1 --output lerp.mp4

Every grid cell walks through `num_keyframes` seeds' ws; between keyframes the ws follow a cubic spline in W
(scipy interp1d kind='cubic' along time, over the keyframes tiled 2*wraps+1 = 5 times so the loop closes
smoothly: the video ends where it starts), `--w-frames` frames per keyframe, 60 fps, H.264 at 12 Mbit/s, as the
official tool. Seed i of cell (x, y) at keyframe k is seeds[(y*W + x)*K + k mod len(seeds)] (after the optional
--shuffle-seed shuffle), as officially. The video is num_keyframes * w_frames frames; without --num-keyframes,
the number of seeds must be divisible by W*H and num_keyframes = len(seeds) / (W*H).

Differences from the official tool: conditional networks are supported (--class; truncation toward the global
w_avg as official, or with --trunc-center=class toward that class's mean w, see sg3jax/sampling/generate.py);
--trunc-cutoff; frames are rendered in jitted batches. The MP4 is written to a temporary file and renamed into
place. Needs imageio and imageio-ffmpeg (which bundles an ffmpeg binary).
"""

import argparse
import sys
import warnings

import imageio
import numpy as np
import scipy.interpolate
from tqdm import tqdm

from sg3jax import sampling, utils
from sg3jax.sampling import cli, load


def build_parser():
    p = argparse.ArgumentParser(prog='python -m sg3jax.gen_video', description=__doc__.split('\n\n')[0])
    p.add_argument('--network', required=True, metavar='PATH',
                   help='sg3jax export, training workdir, or NVIDIA .pkl')
    p.add_argument('--seeds', required=True, help="list of random seeds, e.g. '0-31'")
    p.add_argument('--shuffle-seed', type=int, default=None, help='random seed to use for shuffling seed order')
    p.add_argument('--grid', default='1x1', help="grid width/height, e.g. '4x3' (default: 1x1)")
    p.add_argument('--num-keyframes', type=int, default=None,
                   help='number of seeds to interpolate through (default: len(seeds) / (W*H))')
    p.add_argument('--w-frames', type=int, default=120, help='number of frames to interpolate between latents')
    p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0, help='truncation psi (default 1)')
    p.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, default=None, metavar='N',
                   help='truncate only the first N ws (default: all)')
    cli.add_trunc_center(p)
    p.add_argument('--class', dest='class_idx', type=int, default=None, help='class label (conditional networks)')
    p.add_argument('--output', required=True, metavar='FILE', help='output .mp4 filename')
    p.add_argument('--batch-size', type=int, default=16, help='images per jitted batch (default 16)')
    return p


def keyframe_seeds(seeds, grid_w, grid_h, num_keyframes=None, shuffle_seed=None) -> np.ndarray:
    """[grid_h, grid_w, num_keyframes] seeds, filled as the official gen_interp_video does."""
    cells = grid_w * grid_h
    if num_keyframes is None:
        if len(seeds) % cells != 0:
            raise cli.ToolError(f'--seeds: the number of seeds ({len(seeds)}) must be divisible by the grid size '
                                f'W*H = {cells} (or pass --num-keyframes)')
        num_keyframes = len(seeds) // cells
    if num_keyframes < 1:
        raise cli.ToolError(f'--num-keyframes must be >= 1, got {num_keyframes}')
    all_seeds = np.array([seeds[i % len(seeds)] for i in range(num_keyframes * cells)], np.int64)
    if shuffle_seed is not None:
        np.random.RandomState(seed=shuffle_seed).shuffle(all_seeds)
    return all_seeds.reshape(grid_h, grid_w, num_keyframes)


def interpolator(ws_keyframes, kind='cubic', wraps=2):
    """ws_keyframes [K, ...] -> f(t) [..., len(t)...]: the official spline, interp1d over x = -K*wraps ..
    K*(wraps+1)-1 of the keyframes tiled 2*wraps+1 times, so f(t) for t in [0, K) is periodic-looking at both ends.
    Splines act on each coordinate independently, so all cells can share one interp1d (same values as the
    official one-interp1d-per-cell)."""
    k = ws_keyframes.shape[0]
    x = np.arange(-k * wraps, k * (wraps + 1))
    y = np.tile(ws_keyframes, [wraps * 2 + 1] + [1] * (ws_keyframes.ndim - 1))
    return scipy.interpolate.interp1d(x, y, kind=kind, axis=0)


def gen_interp_video(G, mp4, seeds, shuffle_seed=None, w_frames=120, kind='cubic', grid_dims=(1, 1),
                     num_keyframes=None, wraps=2, psi=1.0, cutoff=None, class_idx=None, fps=60, codec='libx264',
                     bitrate='12M', batch_size=16, progress=True, trunc_center='w_avg'):
    """Writes the interpolation video to `mp4` (atomically). G: (params, buffers, cfg)."""
    G = sampling.as_generator(G)
    seeds = cli.parse_seeds(seeds)
    grid_w, grid_h = cli.parse_tuple(grid_dims)
    if w_frames < 1:
        raise cli.ToolError(f'--w-frames must be >= 1, got {w_frames}')
    if batch_size < 1:
        raise cli.ToolError(f'--batch-size must be >= 1, got {batch_size}')
    class_idx = sampling.check_class(G, class_idx)
    kf = keyframe_seeds(seeds, grid_w, grid_h, num_keyframes, shuffle_seed)         # [gh, gw, K]
    num_keyframes = kf.shape[2]
    cells = grid_w * grid_h

    center = sampling.truncation_center(G, class_idx, psi, trunc_center)
    z = sampling.z_from_seeds(kf.reshape(-1), G.spec.z_dim)
    ws = sampling.mapping(G, z, sampling.labels(G, class_idx, len(z)), psi, cutoff, center, batch_size)
    ws = ws.reshape(cells, num_keyframes, *ws.shape[1:]).astype(np.float64)     # cells in row-major grid order
    interp = interpolator(np.moveaxis(ws, 1, 0), kind=kind, wraps=wraps)         # t -> [cells, num_ws, w_dim]

    num_frames = num_keyframes * w_frames
    frames_per_batch = max(1, batch_size // cells)
    # imageio-ffmpeg starts ffmpeg through subprocess (fork + exec at once), which JAX's fork warning flags.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='os.fork', category=RuntimeWarning)
        with utils.atomic_path(mp4) as tmp:
            writer = imageio.get_writer(tmp, mode='I', fps=fps, codec=codec, bitrate=bitrate)
            try:
                with tqdm(total=num_frames, desc='gen_video', unit='frame', disable=not progress,
                          file=sys.stderr) as bar:
                    for f0 in range(0, num_frames, frames_per_batch):
                        t = np.arange(f0, min(f0 + frames_per_batch, num_frames)) / w_frames
                        w = interp(t).astype(np.float32)                          # [T, cells, num_ws, w_dim]
                        imgs = sampling.synthesis(G, w.reshape(-1, *w.shape[2:]),
                                                  batch_size=frames_per_batch * cells)
                        for frame in imgs.reshape(len(t), cells, *imgs.shape[1:]):
                            writer.append_data(sampling.image_grid(frame, grid_w, grid_h))
                        bar.update(len(t))
            finally:
                writer.close()
    return mp4


def main(argv=None):
    parser = build_parser()
    args = cli.parse_args(parser, argv)

    def run(a):
        cli.parse_seeds(a.seeds)
        cli.parse_tuple(a.grid)
        if not a.output.lower().endswith('.mp4'):
            raise cli.ToolError(f'--output {a.output}: expected a .mp4 filename')
        print(f'Loading networks from "{a.network}"...', file=sys.stderr)
        G = sampling.Generator(*load.load_generator(a.network))
        return gen_interp_video(G, a.output, a.seeds, a.shuffle_seed, a.w_frames, grid_dims=a.grid,
                                num_keyframes=a.num_keyframes, psi=a.truncation_psi, cutoff=a.truncation_cutoff,
                                class_idx=a.class_idx, batch_size=a.batch_size, trunc_center=a.trunc_center)
    return cli.run_main(parser, run, args)


if __name__ == '__main__':
    main()

"""filtered_lrelu / upfirdn2d / modulated_conv2d: 'fast' vs 'ref' implementation, forward and forward+backward.

    python benchmarks/bench_ops.py [--batch 4] [--channels 128] [--iters 5]

The shapes are the official layers of a 256-px StyleGAN3-T (sizes, filters, up/down, padding from the config)
and one StyleGAN3-R radial layer, so the table shows what the synthesis network actually runs.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax.networks import generator, synthesis_sg3
from sg3jax.ops import filtered_lrelu, modulated_conv2d


def _median_time(f, args, iters):
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--channels', type=int, default=128)
    ap.add_argument('--iters', type=int, default=5)
    args = ap.parse_args()
    base = dict(arch='stylegan3', z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3)
    specs = {'T-256': generator.spec(base).synthesis,
             'R-256': generator.spec(dict(base, conv_kernel=1, use_radial_filters=True)).synthesis}
    picks = [('T-256', 0), ('T-256', 4), ('T-256', 9), ('T-256', 12), ('R-256', 5)]
    print(f'# backend={jax.default_backend()} jax={jax.__version__} batch={args.batch} channels={args.channels}')
    print('| op | layer | in | up/down | taps | ref ms | fast ms | speed-up | ref fwd+bwd ms | fast fwd+bwd ms |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    rng = np.random.RandomState(0)
    for cfg_name, idx in picks:
        layer = specs[cfg_name].layers[idx]
        fu, fd = synthesis_sg3.layer_filters(layer)
        n_in = layer.in_size + layer.conv_kernel - 1
        x = jnp.asarray(rng.randn(args.batch, n_in, n_in, args.channels).astype(np.float32))
        b = jnp.asarray(rng.randn(args.channels).astype(np.float32))
        row = []
        for impl in ('ref', 'fast'):
            f = lambda x, impl=impl: filtered_lrelu(x, fu, fd, b, up=layer.up_factor, down=layer.down_factor,
                                                    padding=layer.padding, clamp=256, impl=impl)
            g = jax.grad(lambda x, f=f: jnp.sum(f(x)))
            row.append((_median_time(f, (x,), args.iters), _median_time(g, (x,), args.iters)))
        (rf, rb), (ff, fb) = row
        taps = f'{layer.up_taps}/{layer.down_taps}{"r" if layer.down_radial else ""}'
        print(f'| filtered_lrelu | {cfg_name} {layer.name} | {n_in}^2 | {layer.up_factor}/{layer.down_factor} | '
              f'{taps} | {rf * 1e3:.1f} | {ff * 1e3:.1f} | {rf / ff:.1f}x | {rb * 1e3:.1f} | {fb * 1e3:.1f} |',
              flush=True)

    for size in (36, 84):
        c = args.channels
        x = jnp.asarray(rng.randn(args.batch, size, size, c).astype(np.float32))
        w = jnp.asarray(rng.randn(c, c, 3, 3).astype(np.float32))
        s = jnp.asarray(rng.randn(args.batch, c).astype(np.float32))
        times = []
        for fused in (True, False):
            f = lambda x, w, s, fused=fused: modulated_conv2d(x, w, s, padding=2, input_gain=jnp.float32(0.7),
                                                              fused=fused)
            g = jax.grad(lambda w, x, s, f=f: jnp.sum(f(x, w, s)))
            times.append((_median_time(f, (x, w, s), args.iters), _median_time(g, (w, x, s), args.iters)))
        (rf, rb), (ff, fb) = times
        print(f'| modulated_conv2d (fused=ref, dense=fast) | 3x3 {c}->{c} | {size}^2 | - | - | {rf * 1e3:.1f} | '
              f'{ff * 1e3:.1f} | {rf / ff:.1f}x | {rb * 1e3:.1f} | {fb * 1e3:.1f} |', flush=True)


if __name__ == '__main__':
    main()

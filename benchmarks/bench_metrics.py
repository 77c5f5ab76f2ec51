"""Metric throughput: the feature networks alone and the per-batch steps of FID (G + Inception), PPL (G + LPIPS)
and EQ-T/EQ-R (G x2 + image operators), in images per second, random weights.

    python benchmarks/bench_metrics.py [--res 256] [--batch 32] [--iters 3] [--cfg stylegan3-t]

A 50k metric takes about 50000 / (img/s) seconds plus the dataset pass; compile time is printed separately.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax.metrics import equivariance, inception, metric_utils, vgg16
from sg3jax.networks import generator, presets


def _time(f, args, iters):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return compile_s, statistics.median(ts)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--res', type=int, default=256)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--cfg', default='stylegan3-t')
    p.add_argument('--cbase', type=int, default=32768)
    args = p.parse_args()
    b, r = args.batch, args.res
    print(f'devices: {jax.devices()}  batch {b}  res {r}  cfg {args.cfg}')
    ip, vp = inception.init(0), vgg16.init(0)
    imgs = jnp.asarray(np.random.default_rng(0).integers(0, 256, (b, r, r, 3)), jnp.uint8)
    g_cfg, _ = presets.network_configs(args.cfg, r, cbase=args.cbase)
    gp, gb = jax.jit(lambda k: generator.init(k, g_cfg))(jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (b, g_cfg['z_dim']))
    ws = generator.mapping(gp, gb, z, None, g_cfg)
    synth = lambda w, m: generator.synthesis(gp, gb, w, g_cfg, transform=m)
    rows = [
        ('inception features', jax.jit(inception.apply), (ip, imgs)),
        ('vgg16 features (PR)', jax.jit(lambda p, x: vgg16.apply(p, x, return_features=True)), (vp, imgs)),
        ('vgg16 lpips (PPL, no resize)',
         jax.jit(lambda p, x: vgg16.apply(p, x, resize_images=False, return_lpips=True)), (vp, imgs)),
        ('G + inception (FID step)',
         jax.jit(lambda z: inception.apply(ip, metric_utils.to_uint8(generator.apply(gp, gb, z, None, g_cfg)))),
         (z,)),
    ]
    if args.cfg.startswith('stylegan3'):
        for flag in ('compute_eqt_int', 'compute_eqt_frac', 'compute_eqr'):
            rows.append((f'EQ step {flag[8:]}', jax.jit(lambda w, k, f=flag: equivariance.equivariance_sums(
                synth, w, k, r, **{f: True})), (ws, jax.random.key(2))))
    print(f'{"step":34s} {"compile s":>10s} {"img/s":>10s}')
    for name, f, a in rows:
        c, t = _time(f, a, args.iters)
        print(f'{name:34s} {c:10.1f} {b / t:10.1f}')


if __name__ == '__main__':
    main()

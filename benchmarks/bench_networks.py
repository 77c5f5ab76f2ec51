"""G and D forward throughput: images/s and achieved GFLOP/s, on whatever backend JAX sees.

    python benchmarks/bench_networks.py                 # golden-size configs + default-capacity T at 64/128/256
    python benchmarks/bench_networks.py --only T-256 --impl ref --batch 4
    python benchmarks/bench_networks.py --only T-256,R-256 --impl conv --batch 4 --grad   # forward + backward

FLOPs come from XLA's cost analysis of the compiled function (so they count what XLA runs, e.g. the zero taps a
'ref' zero-insertion upsampler multiplies). Timing: one warm-up call after compilation, then the median of
`--iters` calls, each synchronised with block_until_ready.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from sg3jax.networks import discriminator, generator, presets

SMALL = dict(z_dim=64, c_dim=0, w_dim=64, img_channels=3, mapping_kwargs={'num_layers': 2}, channel_base=4096,
             channel_max=128)

G_CONFIGS = {
    # The golden configs (../shared/golden README).
    'sg3t_64': dict(arch='stylegan3', img_resolution=64, **SMALL),
    'sg3r_64': dict(arch='stylegan3', img_resolution=64, **{**SMALL, 'channel_base': 8192, 'channel_max': 256},
                    conv_kernel=1, use_radial_filters=True),
    'sg2_64': dict(arch='stylegan2', img_resolution=64, **SMALL),
    # Default capacity StyleGAN3-T (channel_base 32768, channel_max 512).
    **{f'T-{r}': presets.network_configs('stylegan3-t', r)[0] for r in (64, 128, 256)},
    'R-256': presets.network_configs('stylegan3-r', 256)[0],
}
D_CONFIGS = {
    'D_64': dict(c_dim=0, img_resolution=64, img_channels=3, channel_base=4096, channel_max=128),
    **{f'D-{r}': presets.network_configs('stylegan3-t', r)[1] for r in (64, 128, 256)},
}


def _time(fn, args, iters):
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
    jax.block_until_ready(compiled(*args))   # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), flops


def _with_grad(fn, grad):
    """`fn`, or (with --grad) the gradient of the sum of its output w.r.t. its first argument (the parameters):
    a forward and a backward pass, as in a training step."""
    if not grad:
        return fn
    return jax.grad(lambda p, *rest: jnp.sum(fn(p, *rest).astype(jnp.float32)))


def bench_G(name, cfg, batch, iters, impl, grad=False):
    params, buffers = generator.init(jax.random.key(0), cfg)
    z = jax.random.normal(jax.random.key(1), (batch, cfg['z_dim']))
    fn = lambda p, b, z: generator.apply(p, b, z, None, cfg, impl=impl)
    sec, flops = _time(_with_grad(fn, grad), (params, buffers, z), iters)
    return sec, flops


def bench_D(name, cfg, batch, iters, impl, grad=False):
    params, _ = discriminator.init(jax.random.key(0), cfg)
    r = cfg['img_resolution']
    img = jax.random.normal(jax.random.key(1), (batch, r, r, cfg['img_channels']))
    fn = lambda p, x: discriminator.apply(p, x, None, cfg, impl=impl)
    return _time(_with_grad(fn, grad), (params, img), iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--impl', default='fast', choices=['fast', 'conv', 'ref'],
                    help="upfirdn2d implementation; 'conv' is the form 'fast' takes on a TPU")
    ap.add_argument('--grad', action='store_true', help='time forward + backward (grad w.r.t. the parameters)')
    ap.add_argument('--only', default='', help='comma-separated config names (default: all)')
    args = ap.parse_args()
    only = set(filter(None, args.only.split(',')))

    dev = jax.devices()[0]
    print(f'# backend={jax.default_backend()} device={dev.device_kind} x{jax.device_count()} '
          f'jax={jax.__version__} batch={args.batch} impl={args.impl}{" forward+backward" if args.grad else ""}')
    print(f'| {"net":8s} | {"config":8s} | {"ms/batch":>9s} | {"img/s":>8s} | {"GFLOP/img":>9s} | {"GFLOP/s":>8s} |')
    print(f'|{"-" * 10}|{"-" * 10}|{"-" * 11}|{"-" * 10}|{"-" * 11}|{"-" * 10}|')
    for kind, table, fn in (('G', G_CONFIGS, bench_G), ('D', D_CONFIGS, bench_D)):
        for name, cfg in table.items():
            if only and name not in only:
                continue
            sec, flops = fn(name, cfg, args.batch, args.iters, args.impl, args.grad)
            print(f'| {kind:8s} | {name:8s} | {sec * 1e3:9.1f} | {args.batch / sec:8.1f} | '
                  f'{flops / args.batch / 1e9:9.2f} | {flops / sec / 1e9:8.1f} |', flush=True)


if __name__ == '__main__':
    main()

"""ADA augmentation cost next to the discriminator it feeds: ms per batch, forward and forward+backward.

    python benchmarks/bench_augment.py                          # bgc at 256 px, batch 8, vs D-256
    python benchmarks/bench_augment.py --res 1024 --batch 4 --specs bgc,blit,bgcfnc --p 0.5

Every augment row is at the given p (default 1: every op fires for most samples; the cost does not depend on p,
since the whole batch is resampled and the identity samples are selected afterwards). fwd+bwd is the value and
gradient of sum(out * w) w.r.t. the input images, which is what G's loss and R1 need (value_and_grad, so that XLA
cannot drop the forward pass: the geometric pass is linear, and its transpose alone needs no forward values).
The D rows use the official --cfg stylegan3-t D at the same resolution (sg3jax.networks.presets). Timing as
bench_networks.py: one warm-up call after compilation, then the median of --iters calls, each synchronised with
block_until_ready.
"""

import argparse

import jax
import jax.numpy as jnp

from sg3jax.networks import discriminator, presets
from sg3jax.training import augment

from bench_ops import _median_time as _time   # beside this script: one warm-up, then the median


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--res', type=int, default=256)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--iters', type=int, default=10)
    ap.add_argument('--p', type=float, default=1.0)
    ap.add_argument('--specs', default='bgc', help='comma-separated augment presets (augment.PRESETS)')
    ap.add_argument('--no_d', action='store_true', help='skip the D rows')
    args = ap.parse_args()

    dev = jax.devices()[0]
    n, r = args.batch, args.res
    print(f'# backend={jax.default_backend()} device={dev.device_kind} x{jax.device_count()} jax={jax.__version__} '
          f'res={r} batch={n} p={args.p}')
    print(f'| {"what":16s} | {"pass":7s} | {"ms/batch":>9s} | {"img/s":>9s} |')
    print(f'|{"-" * 18}|{"-" * 9}|{"-" * 11}|{"-" * 11}|')

    def row(what, pas, sec):
        print(f'| {what:16s} | {pas:7s} | {sec * 1e3:9.2f} | {n / sec:9.1f} |', flush=True)

    img = jax.random.uniform(jax.random.key(1), (n, r, r, 3), minval=-1, maxval=1)
    w = jax.random.normal(jax.random.key(2), img.shape)
    key, p = jax.random.key(3), jnp.float32(args.p)
    for name in filter(None, args.specs.split(',')):
        fwd = lambda x, k, p, name=name: augment.augment(x, k, p, name)
        bwd = lambda x, k, p, name=name: jax.value_and_grad(
            lambda x: jnp.sum(augment.augment(x, k, p, name) * w))(x)
        row(f'augment {name}', 'fwd', _time(fwd, (img, key, p), args.iters))
        row(f'augment {name}', 'fwd+bwd', _time(bwd, (img, key, p), args.iters))

    if not args.no_d:
        d_cfg = presets.network_configs('stylegan3-t', r)[1]
        params, _ = discriminator.init(jax.random.key(0), d_cfg)
        fwd = lambda prm, x: discriminator.apply(prm, x, None, d_cfg)
        bwd = lambda prm, x: jax.value_and_grad(lambda prm, x: jnp.sum(discriminator.apply(prm, x, None, d_cfg)),
                                                argnums=(0, 1))(prm, x)
        row(f'D-{r}', 'fwd', _time(fwd, (params, img), args.iters))
        row(f'D-{r}', 'fwd+bwd', _time(bwd, (params, img), args.iters))


if __name__ == '__main__':
    main()

"""filtered_lrelu alone: what its forward and forward + backward cost with the sign-mask backward (the op) and with
JAX's autodiff of the same composition (the op before it had one), compiled for this host and for one TPU chip.

    python benchmarks/bench_filtered_lrelu.py                       # the late StyleGAN3-T-256 layer of issue 17
    python benchmarks/bench_filtered_lrelu.py --shape 4,148,148,128 --tpu '' --iters 3

Default shape: [4, 276, 276, 64], up 2, down 2, 12-tap separable filters, clamp 256 (a late T-256 layer at 4 per
chip). Figures: XLA's cost analysis ("bytes accessed", FLOPs) and memory analysis (temporaries) of the compiled
program, the input + output bytes they are compared with, and on this host the median time of `--iters` calls.
For the TPU (`--tpu v5e:2x2`: one chip of it; libtpu as a compiler, no TPU needed) the figures are the compiler's, not a
measurement: no TPU runs here. The backward is the gradient of sum(w * y) for a fixed random w, w.r.t. x and b.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from sg3jax import ops
from sg3jax.planning import plan as plan_lib


def by_autodiff(x, b, fu, fd, up, down, padding, gain, slope, clamp):
    """The composition of filtered_lrelu's steps, differentiated by JAX (the op's program before its custom
    backward)."""
    x = ops.bias_act(x, b)
    x = ops.upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2)
    x = ops.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp)
    return ops.upfirdn2d(x, fd, down=down)


def programs(shape, dtype, kw, fu, fd):
    """{(variant, pass): (function, argument shapes)}."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    b = jax.ShapeDtypeStruct(shape[-1:], jnp.float32)
    variants = {'mask': lambda x, b: ops.filtered_lrelu(x, fu, fd, b, **kw),
                'autodiff': lambda x, b: by_autodiff(x, b, fu, fd, **kw)}
    out = {}
    for name, f in variants.items():
        y = jax.eval_shape(f, x, b)
        w = jax.ShapeDtypeStruct(y.shape, dtype)
        out[name, 'forward'] = (f, (x, b))
        out[name, 'forward+backward'] = (
            jax.grad(lambda x, b, w, f=f: jnp.sum((w * f(x, b)).astype(jnp.float32)), argnums=(0, 1)), (x, b, w))
    return out, jax.eval_shape(variants['mask'], x, b)


def figures(fn, args, device):
    arg_sh = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=SingleDeviceSharding(device)) for a in args]
    compiled = jax.jit(fn).lower(*arg_sh).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    mem = compiled.memory_analysis()
    return compiled, float(cost.get('bytes accessed', float('nan'))), float(cost.get('flops', float('nan'))), \
        int(getattr(mem, 'temp_size_in_bytes', 0) or 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--shape', default='4,276,276,64', help='N,H,W,C of the input')
    ap.add_argument('--dtypes', default='float32,bfloat16')
    ap.add_argument('--tpu', default='v5e:2x2', help="TPU slice whose first chip to compile for ('' = none)")
    ap.add_argument('--iters', type=int, default=3, help='timed calls on this host (0 = compile only)')
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(','))
    rng = np.random.RandomState(0)
    fu = ops.setup_filter(rng.rand(12).astype(np.float32))
    fd = ops.setup_filter(rng.rand(12).astype(np.float32))
    # Upsampled padding so that the output has the input's size, as in StyleGAN3's layers.
    pad = 2 * (shape[1] - 1) + 12 - 2 * shape[1]
    kw = dict(up=2, down=2, padding=[pad // 2, pad - pad // 2] * 2, gain=float(np.sqrt(2)), slope=0.2, clamp=256.0)
    targets = [('host', jax.devices()[0])]
    if args.tpu:
        targets.append((args.tpu, plan_lib.topology_devices(args.tpu)[0]))
    print(f'# filtered_lrelu {list(shape)} up 2 down 2, 12-tap separable filters, clamp 256; jax {jax.__version__}')
    print('| target | dtype | variant | pass | bytes accessed (GB) | / (in + out) | temporaries (GB) | GFLOP | ms |')
    print('|---|---|---|---|---|---|---|---|---|')
    for dtype in args.dtypes.split(','):
        table, y = programs(shape, jnp.dtype(dtype), kw, fu, fd)
        io = (np.prod(shape) + np.prod(y.shape)) * jnp.dtype(dtype).itemsize
        for target, device in targets:
            for (variant, which), (fn, shapes) in table.items():
                compiled, nbytes, flops, temp = figures(fn, shapes, device)
                ms = '-'
                if target == 'host' and args.iters:
                    concrete = [jnp.asarray(rng.randn(*s.shape), s.dtype) for s in shapes]
                    jax.block_until_ready(compiled(*concrete))
                    times = []
                    for _ in range(args.iters):
                        t0 = time.perf_counter()
                        jax.block_until_ready(compiled(*concrete))
                        times.append(time.perf_counter() - t0)
                    ms = f'{statistics.median(times) * 1e3:.0f}'
                # forward+backward also reads w and writes dx: count those in its input + output bytes.
                io_pass = io * (2 if which == 'forward+backward' else 1)
                print(f'| {target} | {dtype} | {variant} | {which} | {nbytes / 1e9:.3f} | {nbytes / io_pass:.1f} | '
                      f'{temp / 1e9:.3f} | {flops / 1e9:.2f} | {ms} |', flush=True)


if __name__ == '__main__':
    main()

"""StyleGAN3-T on a CPU, side by side with the official code: G forward, G forward + backward, a training step.

    python benchmarks/bench_cpu_train.py                                    # sg3jax alone
    python benchmarks/bench_cpu_train.py --official ~/stylegan3 --official-python ~/torch-venv/bin/python

The networks are those of the golden cases `sg3t_64` and `D_64` (StyleGAN3-T at 64 px with channel_base 4096 and
channel_max 128, its 64 px StyleGAN2 discriminator; ../shared/golden/README.md), at batch 8, in float32 on the
CPU's cores. A training step is every phase the official loop runs per minibatch: Gmain, Dmain, R1 (Dreg) on every
other step (D_reg_interval 2, so the timed pair of steps has one), then the G EMA; the step time is the mean over
such pairs. "G forward + backward" is the gradient of mean(softplus(-D(G(z)))) with respect to G, the Gmain
loss. Times are the best of --repeats after one warm-up (which compiles); compile times are printed apart.

With --official (a checkout of NVlabs/stylegan3) and --official-python (an interpreter with torch), the same
measurements run there through the official classes (`networks_stylegan3.Generator`, `networks_stylegan2.
Discriminator`, `loss.StyleGAN2Loss`, Adam with the official betas), in a subprocess, with its reference (non-CUDA)
ops as on any CPU, `torch.set_num_threads` = the cores JAX uses.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp

from sg3jax.networks import discriminator, generator
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib

BATCH = 8
G_KWARGS = dict(z_dim=64, c_dim=0, w_dim=64, img_resolution=64, img_channels=3, mapping_kwargs={'num_layers': 2},
                channel_base=4096, channel_max=128, magnitude_ema_beta=0.5 ** (32 / 20000), num_fp16_res=0,
                conv_clamp=256)
D_KWARGS = dict(c_dim=0, img_resolution=64, img_channels=3, architecture='resnet', channel_base=4096,
                channel_max=128, num_fp16_res=0, conv_clamp=256, block_kwargs={}, mapping_kwargs={},
                epilogue_kwargs={'mbstd_group_size': 4})


def best_of(fn, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, min(times)


def bench_ours(repeats):
    G_cfg = {'class_name': 'training.networks_stylegan3.Generator', **G_KWARGS}
    D_cfg = {'class_name': 'training.networks_stylegan2.Discriminator', **D_KWARGS}
    G, G_buf = generator.init(jax.random.key(0), G_cfg)
    D, _ = discriminator.init(jax.random.key(1), D_cfg)
    z = jax.random.normal(jax.random.key(2), (BATCH, G_KWARGS['z_dim']))
    forward = jax.jit(lambda G, b: generator.apply(G, b, z, None, G_cfg))
    loss = lambda G, b: jnp.mean(jax.nn.softplus(-discriminator.apply(D, generator.apply(G, b, z, None, G_cfg),
                                                                       None, D_cfg)))
    grad = jax.jit(jax.grad(loss))
    out = {}
    out['G forward'] = best_of(lambda: forward(G, G_buf), repeats)
    out['G forward + backward'] = best_of(lambda: grad(G, G_buf), repeats)

    # The trainer's phases for these networks: R1 every other step, no augmentation, no blur, no path length.
    config = config_lib.base_config('stylegan3-t')
    config.update(dict(resolution=64, batch_size=BATCH, batch_gpu=BATCH, gamma=1.0, D_reg_interval=2, aug='noaug'))
    run = config_lib.replace(config_lib.resolve(config, num_devices=1), G_kwargs=G_cfg, D_kwargs=D_cfg)
    steps = steps_lib.make_steps(run)
    state = steps_lib.init_state(jax.random.key(0), run)
    real = {'img': jax.random.uniform(jax.random.key(3), (BATCH, 64, 64, 3), minval=-1, maxval=1),
            'c': jnp.zeros([BATCH, 0])}
    counter = iter(range(10 ** 6))

    def two_steps():
        nonlocal state
        for _ in range(2):
            i = next(counter)
            state, _ = steps_lib.train_step(state, real, jax.random.key(4), run, steps, i)
        return state
    first, best = best_of(two_steps, repeats)
    out['training step'] = (first / 2, best / 2)
    return out


OFFICIAL = textwrap.dedent('''
    import json, sys, time
    import numpy as np, torch
    sys.path.insert(0, sys.argv[1])
    from training import networks_stylegan2, networks_stylegan3
    from training.loss import StyleGAN2Loss
    torch.set_num_threads(int(sys.argv[2]))
    repeats, batch = int(sys.argv[3]), int(sys.argv[4])
    G_kwargs, D_kwargs = json.loads(sys.argv[5]), json.loads(sys.argv[6])
    torch.manual_seed(0)
    G = networks_stylegan3.Generator(**G_kwargs).train().requires_grad_(False)
    D = networks_stylegan2.Discriminator(**D_kwargs).train().requires_grad_(False)
    z = torch.randn([batch, G.z_dim]); c = torch.zeros([batch, 0])
    real = torch.rand([batch, 3, 64, 64]) * 2 - 1

    def best_of(fn):
        t0 = time.perf_counter(); fn(); first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
        return first, min(times)

    def forward():
        with torch.no_grad():
            G(z, c)

    def forward_backward():
        G.requires_grad_(True)
        for p in G.parameters():
            p.grad = None
        torch.nn.functional.softplus(-D(G(z, c), c)).mean().backward()
        G.requires_grad_(False)

    # The official training loop's phases and optimisers (training_loop.py): SG3 has no G regularisation; R1 every
    # D_reg_interval = 2 minibatches with the lazy-regularisation Adam adjustment.
    loss = StyleGAN2Loss(device=torch.device('cpu'), G=G, D=D, r1_gamma=1.0)
    mb = 2 / 3
    G_opt = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    D_opt = torch.optim.Adam(D.parameters(), lr=0.002 * mb, betas=(0.0 ** mb, 0.99 ** mb), eps=1e-8)
    G_ema = networks_stylegan3.Generator(**G_kwargs).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    step = [0]

    def phase(name, module, opt, gain):
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        loss.accumulate_gradients(phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=gain, cur_nimg=0)
        module.requires_grad_(False)
        params = [p for p in module.parameters() if p.numel() > 0 and p.grad is not None]
        flat = torch.cat([p.grad.flatten() for p in params])
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.reshape(p.shape)
        opt.step()

    def two_steps():
        for _ in range(2):
            phase('Gboth', G, G_opt, 1)
            phase('Dmain', D, D_opt, 1)
            if step[0] % 2 == 0:
                phase('Dreg', D, D_opt, 2)
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, 0.99))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
            step[0] += 1

    out = {'G forward': best_of(forward), 'G forward + backward': best_of(forward_backward)}
    first, best = best_of(two_steps)
    out['training step'] = (first / 2, best / 2)
    print(json.dumps(out))
''')


def bench_official(checkout, python, threads, repeats):
    args = [python, '-c', OFFICIAL, os.path.abspath(os.path.expanduser(checkout)), str(threads), str(repeats),
            str(BATCH), json.dumps(G_KWARGS), json.dumps(D_KWARGS)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f'the official code failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--official', help='a checkout of NVlabs/stylegan3 (run side by side when given)')
    p.add_argument('--official-python', default=sys.executable, help='an interpreter with torch for it')
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    threads = os.cpu_count()
    print(f'# {jax.devices()[0].device_kind} ({threads} cores), jax {jax.__version__}; batch {BATCH}, float32')
    ours = bench_ours(args.repeats)
    official = bench_official(args.official, args.official_python, threads, args.repeats) if args.official else None
    print('| measurement | ' + ('official (s) | ' if official else '') + 'sg3jax (s) | '
          + ('speed-up | ' if official else '') + 'sg3jax first call, with compiling (s) |')
    print('|---|' + ('---|' if official else '') + '---|' + ('---|' if official else '') + '---|')
    for name, (first, best) in ours.items():
        row = f'| {name} | '
        if official:
            row += f'{official[name][1]:.2f} | '
        row += f'{best:.2f} | '
        if official:
            row += f'{official[name][1] / best:.1f}x | '
        print(row + f'{first:.1f} |')
    ratio = ours['G forward + backward'][1] / ours['G forward'][1]
    print(f'# sg3jax: G forward + backward = {ratio:.1f}x the G forward')


if __name__ == '__main__':
    main()

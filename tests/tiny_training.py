"""Tiny resolved training configs, batches and runs shared by the update-step tests (not collected by pytest).

The tests that compile update steps use the same few configs on purpose: a program compiled for one test is a hit
of the session's XLA cache in the next (tests/conftest.py), and compiling is most of their time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib


def tiny_run(batch_size=32, batch_gpu=4, cfg='stylegan3-t', c_dim=0, sg3_layers=4, **fields):
    """A resolved training config (config.resolve, for one device: the update steps read no device count from it)
    of 16 px, 32 channels at most, z and w of 16; StyleGAN3's synthesis with `sg3_layers` layers (official 14,
    all built alike: 4 exercise every kind, the last critically sampled, at about half the compile time).
    `fields`: any other config field, set before resolving."""
    config = config_lib.base_config(cfg)
    config.update({**dict(resolution=16, batch_size=batch_size, batch_gpu=batch_gpu, cbase=512, cmax=32, z_dim=16,
                          w_dim=16, glr=0.0025, dlr=0.002, gamma=1.0, blur_init_sigma=2.0, blur_fade_kimg=1.0,
                          ema_kimg=0.01, aug='noaug', cond=c_dim > 0), **fields})
    return with_sg3_layers(config_lib.resolve(config, num_devices=1, c_dim=c_dim), sg3_layers)


def with_sg3_layers(run, n):
    """Resolved config `run` with a StyleGAN3 synthesis of `n` layers built alike, the last critically sampled
    (the official 14); a StyleGAN2 `run` as it is."""
    if run.cfg == 'stylegan2':
        return run
    G_cfg, _ = config_lib.network_kwargs(run)
    return config_lib.replace(run, G_kwargs={**G_cfg, 'num_layers': n, 'num_critical': 1})


def with_networks(run, G_cfg=None, D_cfg=None):
    """`run` with other network configs (each None: kept)."""
    G_old, D_old = config_lib.network_kwargs(run)
    return config_lib.replace(run, G_kwargs=G_cfg or G_old, D_kwargs=D_cfg or D_old)


def mesh(n):
    return jax.make_mesh((n,), ('data',), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def batch(n, c_dim=0, seed=0):
    """Random real images in [-1, 1] and one-hot labels, on the host."""
    rng = np.random.RandomState(seed)
    c = np.eye(c_dim, dtype=np.float32)[rng.randint(0, c_dim, n)] if c_dim else np.zeros([n, 0], np.float32)
    return {'img': rng.uniform(-1, 1, [n, 16, 16, 3]).astype(np.float32), 'c': c}


def train_steps(run, n_dev, n_steps=3, c_dim=0, phases=None, flops_of=()):
    """`n_steps` training steps on an `n_dev`-device mesh from a fixed state, key and batches: every phase of each
    step, or only those of them named in `phases`. Returns {'state': the final state, 'metrics': each step's
    metrics (on the host), 'flops': {phase: FLOPs per device} of the compiled programs of the phases named in
    `flops_of`} (read from the programs the run compiled: lowered for the run's own arguments, the compile is the
    jit's cached one)."""
    m = mesh(n_dev)
    steps = steps_lib.make_steps(run, m)
    state = jax.jit(lambda k: steps_lib.init_state(k, run), out_shardings=NamedSharding(m, P()))(jax.random.key(0))
    key = jax.random.key(1)
    history = []
    for i in range(n_steps):
        b = jax.device_put(batch(run.batch_size, c_dim, seed=i), NamedSharding(m, P('data')))
        metrics = {}
        for name in steps_lib.phases_for_step(i, run):
            if phases is None or name in phases:
                state, phase_metrics = steps[name](state, b, key)
                metrics.update(phase_metrics)
        history.append(jax.device_get(metrics))
    flops = {}
    for name in flops_of:
        cost = steps[name].lower(state, b, key).compile().cost_analysis()
        flops[name] = (cost[0] if isinstance(cost, list) else cost)['flops']
    return {'state': jax.device_get(state), 'metrics': history, 'flops': flops}


def init_state(run):
    return jax.jit(lambda k: steps_lib.init_state(k, run))(jax.random.key(0))


def gradient_recorder(opt_kwargs):
    """In place of `steps.make_optimizer` (monkeypatched): an optimiser that leaves the parameters as they are and
    keeps the sum of the gradients it is given, so a test can compare the phases' exact (cleaned) gradients, which
    Adam's first step (b1 = 0: lr * sign(g) wherever |g| >> eps) would hide."""
    del opt_kwargs
    return optax.GradientTransformation(
        init=lambda params: {'grad_sum': jax.tree.map(jnp.zeros_like, params)},
        update=lambda grads, state, params=None: (
            jax.tree.map(jnp.zeros_like, grads), {'grad_sum': jax.tree.map(jnp.add, state['grad_sum'], grads)}))

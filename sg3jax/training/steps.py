"""The training state and its jit-compiled update steps, data-parallel over a `data` mesh axis.

State: a plain nested dict of arrays (no functions inside, so `eval_shape`, Orbax and parameter counts are
trivial):

    {'G', 'D', 'G_ema':               parameters (replicated)
     'G_opt', 'D_opt':                optax Adam states
     'buffers': {'G', 'G_ema', 'pl_mean'}:  G's w_avg / magnitude_ema / frozen buffers, the EMA copy, path-length mean
     'step':  minibatches done (the official batch_idx), 'nimg': images shown (cur_nimg)}

One jitted function per phase of the resolved config's `phases` (config.resolve: Gmain, Greg every
G_reg_interval, Dmain, Dreg every D_reg_interval, then the G EMA), each taking the whole state (donated) and the
global batch sharded on `data`. The functions close over the resolved config and read nothing else; the loss
options are bound once (loss.StyleGAN2Loss). Randomness is stateless: key = fold_in(fold_in(seed_key, step),
phase_id), so the numbers do not depend on how many devices share the batch.

Choices where the official code is per-GPU (documented in STYLE.md section 4):
  * Minibatch-std groups are formed within chunks of `batch_gpu` consecutive samples of the global batch, computed
    under `jax.shard_map` so no group crosses a device. With batch_gpu = per-device batch this is exactly the
    official per-GPU grouping, and on fewer devices it emulates the same chunks, so 1 and 8 devices agree.
  * Batch statistics that update buffers (w_avg, magnitude_ema) and StyleGAN3's batch-wide style normalisation
    use the global batch (the official code uses each GPU's batch and keeps rank 0's buffers). Equivalent in
    expectation; identical on one device.
  * Gradients are means over the global batch (the official all-reduce averages per-GPU means: the same with
    equal per-GPU batches), then nan_to_num(nan=0, posinf=1e5, neginf=-1e5) as the official loop.
"""

import functools
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sg3jax.networks import discriminator, generator
from sg3jax.networks.discriminator import minibatch_std
from sg3jax.training import augment as augment_lib
from sg3jax.training import config as config_lib
from sg3jax.training import loss as loss_lib

PHASE_IDS = {'Gmain': 0, 'Greg': 1, 'Dmain': 2, 'Dreg': 3, 'ema': 4}


def mixed_dtype(run):
    """None (float32 everywhere) or the dtype of the networks' `use_fp16` layers (config.precision)."""
    return None if run.precision == 'float32' else jnp.dtype(run.precision)


def make_optimizer(opt_kwargs):
    """Adam from a resolved config's `G_opt_kwargs` / `D_opt_kwargs` (official betas (0, 0.99), eps 1e-8, lr and
    betas already adjusted for lazy regularisation by `config.resolve`)."""
    b1, b2 = opt_kwargs['betas']
    return optax.adam(opt_kwargs['lr'], b1=b1, b2=b2, eps=opt_kwargs['eps'])


def freeze_d(tx, D_cfg):
    """Freeze-D (official --freezed): `tx` for D's trainable parameters, and for the frozen first layers
    (`discriminator.trainable`) a zero update and no optimiser state, so they stay bitwise as they are. `tx`
    itself when nothing is frozen."""
    spec = discriminator.spec(D_cfg)
    if not spec.freeze_layers:
        return tx
    params = jax.eval_shape(lambda k: discriminator.init(k, D_cfg)[0], jax.random.key(0))
    labels = jax.tree.map(lambda t: 'train' if t else 'frozen', discriminator.trainable(params, spec))
    return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)


def init_state(key, run):
    """The initial training state of resolved config `run` (G_ema starts as a copy of G, as the official
    deepcopy)."""
    G_cfg, D_cfg = config_lib.network_kwargs(run)
    k_g, k_d = jax.random.split(key)
    G, G_buffers = generator.init(k_g, G_cfg)
    D, _ = discriminator.init(k_d, D_cfg)
    state = {
        'G': G, 'D': D, 'G_ema': jax.tree.map(jnp.copy, G),   # distinct buffers: the state is donated
        'G_opt': make_optimizer(run.G_opt_kwargs).init(G),
        'D_opt': freeze_d(make_optimizer(run.D_opt_kwargs), D_cfg).init(D),
        'buffers': {'G': G_buffers, 'G_ema': jax.tree.map(jnp.copy, G_buffers),
                    'pl_mean': jnp.zeros([], jnp.float32)},
        'step': jnp.zeros([], jnp.int32), 'nimg': jnp.zeros([], jnp.int32),
        # First non-finite loss seen: step * 8 + phase id, or -1 (read at log ticks; see nan_policy).
        'nonfinite': jnp.full([], -1, jnp.int32),
    }
    if run.aug != 'noaug':
        # The augmentation probability (official: 0 for ada, p for fixed) and the ADA heuristic's accumulator of
        # sign(D(real)).
        p = run.p if run.aug == 'fixed' else 0.0
        state['augment'] = {'p': jnp.float32(p), **augment_lib.ada_stats_init()}
    return state


def chunked_minibatch_std(mesh, batch_gpu):
    """Minibatch-std over chunks of `batch_gpu` samples, per device (shard_map over `data`)."""
    def local(x, group_size, num_channels):
        n = x.shape[0]
        if n % batch_gpu:
            raise ValueError(f'per-device batch {n} is not a multiple of batch_gpu {batch_gpu}')
        chunks = x.reshape(n // batch_gpu, batch_gpu, *x.shape[1:])
        y = jax.vmap(lambda c: minibatch_std(c, group_size, num_channels))(chunks)
        return y.reshape(n, *y.shape[2:])

    def fn(x, group_size, num_channels):
        if mesh is None:
            return local(x, group_size, num_channels)
        return jax.shard_map(functools.partial(local, group_size=group_size, num_channels=num_channels),
                             mesh=mesh, in_specs=P('data'), out_specs=P('data'))(x)
    return fn


def _clean(grads):
    return jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)


def _gen_c(key, c):
    """Labels for generated images: the official loop draws them from the training set's labels; a random
    permutation of the real batch's labels is a draw from the same distribution."""
    return c if c.shape[1] == 0 else c[jax.random.permutation(key, c.shape[0])]


def _apply_update(state, name, grads, loss, nan_policy, phase_id, tx):
    """Optimizer step for net `name` ('G'/'D'), with the non-finite bookkeeping of `nan_policy`."""
    grads = _clean(grads)
    updates, opt = tx.update(grads, state[f'{name}_opt'], state[name])
    params = optax.apply_updates(state[name], updates)
    finite = jnp.isfinite(loss)
    code = state['step'] * 8 + phase_id
    nonfinite = jnp.where(~finite & (state['nonfinite'] < 0), code, state['nonfinite'])
    if nan_policy == 'skip':
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        params, opt = keep(params, state[name]), keep(opt, state[f'{name}_opt'])
    return {**state, name: params, f'{name}_opt': opt, 'nonfinite': nonfinite}


def make_steps(run, mesh=None) -> Dict[str, Callable]:
    """{name: step} for every phase of resolved config `run` (`run.phases`: Gmain, Greg, Dmain, Dreg, ema): pure
    (state, batch, key) -> (state, metrics) functions, jitted with the state donated; `batch` = {'img': float32
    [N,H,W,C] in [-1,1], 'c': [N, c_dim]} sharded on `data`. Everything static comes from `run`."""
    G_cfg, D_cfg = config_lib.network_kwargs(run)
    G_tx = make_optimizer(run.G_opt_kwargs)
    D_tx = freeze_d(make_optimizer(run.D_opt_kwargs), D_cfg)
    z_dim = G_cfg['z_dim']
    loss = loss_lib.StyleGAN2Loss(
        G_cfg, D_cfg, **run.loss_kwargs, mbstd_fn=chunked_minibatch_std(mesh, run.batch_gpu),
        # SG2 trains with the dense (non-fused) modconv, as the official fused_modconv_default='inference_only'.
        fused_modconv=False if generator.spec(G_cfg).arch == 'stylegan2' else None,
        mixed_dtype=mixed_dtype(run), remat=run.remat and run.remat_policy)
    intervals = dict(run.phases)
    aug_spec = augment_lib.make_spec(run.augpipe) if run.aug != 'noaug' else None

    def augment_fn(state):
        """The augment pipe at the state's current p (a traced scalar: p changes without recompiling)."""
        if aug_spec is None:
            return None
        p = state['augment']['p']
        return lambda x, k: augment_lib.augment(x, k, p, aug_spec)

    def count_signs(state, real_logits):
        """ADA's overfitting heuristic reads sign(D(real)) of every D pass over reals (Dmain and Dreg, as the
        official 'Loss/signs/real' collector), summed over the global batch."""
        if run.aug != 'ada':
            return state
        return {**state, 'augment': {**state['augment'],
                                     **augment_lib.ada_accumulate(state['augment'], real_logits)}}

    def phase_key(key, state, name):
        return jax.random.fold_in(jax.random.fold_in(key, state['step']), PHASE_IDS[name])

    def update(state, name, grads, loss_value, phase):
        return _apply_update(state, name, grads, loss_value, run.nan_policy, PHASE_IDS[phase],
                             G_tx if name == 'G' else D_tx)

    def G_main(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Gmain'), 3)
        z = jax.random.normal(k[0], (batch['img'].shape[0], z_dim))
        c = _gen_c(k[1], batch['c'])
        f = lambda G: loss.Gmain(G, state['buffers']['G'], state['D'], z, c, cur_nimg=state['nimg'], key=k[2],
                                 augment=augment_fn(state))
        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(state['G'])
        state = update(state, 'G', grads, value, 'Gmain')
        return state, {'Loss/G/loss': value, 'Loss/scores/fake': jnp.mean(aux['scores_fake']),
                       'Loss/signs/fake': jnp.mean(jnp.sign(aux['scores_fake']))}

    def G_reg(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Greg'), 3)
        # The pl batch (batch / pl_batch_shrink, official) is drawn here, and placed on the `data` axis: nothing
        # else in this phase reads the sharded batch, so without the constraint XLA ran the whole pl batch on
        # every device (8x the work on 8 chips). Its labels are a random draw from the real batch's, as _gen_c.
        n = loss.pl_batch_size(batch['img'].shape[0])
        z = jax.random.normal(k[0], (n, z_dim))
        c = batch['c'][jax.random.permutation(k[1], batch['c'].shape[0])[:n]]
        if mesh is not None and n % mesh.size == 0:     # else (a pl batch smaller than the mesh) replicated
            z, c = (jax.lax.with_sharding_constraint(a, NamedSharding(mesh, P('data'))) for a in (z, c))
        f = lambda G: loss.Greg(G, state['buffers']['G'], state['buffers']['pl_mean'], z, c, key=k[2])
        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(state['G'])
        grads = jax.tree.map(lambda g: g * intervals['Greg'], grads)    # phase gain = interval
        state = update(state, 'G', grads, value, 'Greg')
        state = {**state, 'buffers': {**state['buffers'], 'pl_mean': aux['pl_mean']}}
        return state, {'Loss/pl_penalty': jnp.mean(aux['pl_penalty']), 'Loss/G/reg': value}

    def D_main(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Dmain'), 3)
        z = jax.random.normal(k[0], (batch['img'].shape[0], z_dim))
        c = _gen_c(k[1], batch['c'])
        f = lambda D: loss.Dmain(D, state['G'], state['buffers']['G'], z, c, batch['img'], batch['c'],
                                 cur_nimg=state['nimg'], key=k[2], augment=augment_fn(state))
        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(state['D'])
        state = update(state, 'D', grads, value, 'Dmain')
        # w_avg / magnitude_ema move in the D-main generator pass only (official StyleGAN2Loss).
        state = {**state, 'buffers': {**state['buffers'], 'G': aux['G_buffers']}}
        state = count_signs(state, aux['scores_real'])
        return state, {'Loss/D/loss': value, 'Loss/scores/real': jnp.mean(aux['scores_real']),
                       'Loss/signs/real': jnp.mean(jnp.sign(aux['scores_real']))}

    def D_reg(state, batch, key):
        k = phase_key(key, state, 'Dreg')
        f = lambda D: loss.Dreg(D, batch['img'], batch['c'], cur_nimg=state['nimg'], key=k,
                                augment=augment_fn(state))
        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(state['D'])
        grads = jax.tree.map(lambda g: g * intervals['Dreg'], grads)    # phase gain = interval
        state = update(state, 'D', grads, value, 'Dreg')
        state = count_signs(state, aux['scores_real'])
        return state, {'Loss/r1_penalty': jnp.mean(aux['r1_penalty']), 'Loss/D/reg': value}

    def ema(state, batch, key):
        """G_ema = lerp(G, G_ema, beta), beta = 0.5 ** (batch / ema_nimg) with the rampup; buffers copied; then
        the counters advance (official training_loop.py, end of an iteration)."""
        del batch, key
        ema_nimg = run.ema_kimg * 1000
        if run.ema_rampup is not None:
            ema_nimg = jnp.minimum(ema_nimg, state['nimg'].astype(jnp.float32) * run.ema_rampup)
        beta = 0.5 ** (run.batch_size / jnp.maximum(ema_nimg, 1e-8))
        G_ema = jax.tree.map(lambda p, e: p + beta * (e - p), state['G'], state['G_ema'])
        state = {**state, 'G_ema': G_ema, 'buffers': {**state['buffers'], 'G_ema': state['buffers']['G']},
                 'step': state['step'] + 1, 'nimg': state['nimg'] + run.batch_size}
        metrics = {'Progress/ema_beta': beta}
        if run.aug == 'ada':
            # Official "ADA heuristic": every ada_interval minibatches, p moves toward E[sign(D(real))] = target.
            a = state['augment']
            due = state['step'] % run.ada_interval == 0
            p = augment_lib.ada_update(a['p'], a['sign_sum'], a['count'], target=run.target,
                                       batch_size=run.batch_size, interval=run.ada_interval,
                                       ada_kimg=run.ada_kimg)
            fresh = augment_lib.ada_stats_init()
            state = {**state, 'augment': {'p': jnp.where(due, p, a['p']),
                                          **{k: jnp.where(due, fresh[k], a[k]) for k in fresh}}}
        if run.aug != 'noaug':
            metrics['Progress/augment'] = state['augment']['p']
        return state, metrics

    fns = {'Gmain': G_main, 'Greg': G_reg, 'Dmain': D_main, 'Dreg': D_reg, 'ema': ema}
    jit_kw = {}
    if mesh is not None:
        repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
        jit_kw = dict(in_shardings=(repl, {'img': data, 'c': data}, repl), out_shardings=(repl, repl))
    return {name: jax.jit(fns[name], donate_argnums=(0,), **jit_kw) for name, _ in run.phases}


def phases_for_step(step: int, run):
    """Phase names to run at minibatch `step`: those of `run.phases` due at it, in that (the official) order."""
    return [name for name, interval in run.phases if step % interval == 0]


def train_step(state, batch, key, run, steps: Dict[str, Callable], step: int):
    """Runs one minibatch's phases; returns (state, metrics of every phase run). `step` is the host-side copy of
    state['step'] (so choosing the phases never waits for the device)."""
    metrics = {}
    for name in phases_for_step(step, run):
        state, m = steps[name](state, batch, key)
        metrics.update(m)
    return state, metrics

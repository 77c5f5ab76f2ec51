"""The training state and its jit-compiled update steps, data-parallel over a `data` mesh axis.

State: a plain nested dict of arrays (no functions inside, so `eval_shape`, Orbax and parameter counts are
trivial):

    {'G', 'D', 'G_ema':               parameters (replicated)
     'G_opt', 'D_opt':                optax Adam states
     'buffers': {'G', 'G_ema', 'pl_mean'}:  G's w_avg / magnitude_ema / frozen buffers, the EMA copy, path-length mean
     'step':  minibatches done (the official batch_idx), 'nimg': images shown (cur_nimg)}

One jitted function per phase, as the official loop runs phases (Gmain|Gboth, Greg every G_reg_interval,
Dmain, Dreg every D_reg_interval, then the G EMA), each taking the whole state (donated) and the global batch
sharded on `data`. Randomness is stateless: key = fold_in(fold_in(seed_key, step), phase_id), so the numbers do
not depend on how many devices share the batch.

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

import dataclasses
import functools
import json
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sg3jax.networks import discriminator, generator
from sg3jax.networks.discriminator import minibatch_std
from sg3jax.training import augment as augment_lib
from sg3jax.training import loss as L

PHASE_IDS = {'Gmain': 0, 'Greg': 1, 'Dmain': 2, 'Dreg': 3, 'ema': 4}


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Static hyperparameters of the update steps (hashable: closed over by the jitted functions)."""
    G_cfg_json: str
    D_cfg_json: str
    batch_size: int
    batch_gpu: int                  # minibatch-std chunk (official per-GPU batch)
    glr: float
    dlr: float
    G_reg_interval: Optional[int]
    D_reg_interval: Optional[int]
    r1_gamma: float
    style_mixing_prob: float = 0.0
    pl_weight: float = 0.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = 0.05
    nan_policy: str = 'stop'        # 'stop': record the first non-finite step/phase; 'skip': drop that update
    precision: str = 'float32'      # compute dtype of the num_fp16_res top resolutions; weights stay float32
    remat: bool = False             # recompute G layers / D blocks in the backward pass (training memory)
    aug: str = 'noaug'              # 'noaug' | 'ada' | 'fixed' (D-input augmentation, sg3jax.training.augment)
    augpipe: str = 'bgc'
    augment_p: float = 0.0          # initial p: 0 for ada (official), config.p for fixed
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0

    @classmethod
    def from_config(cls, run) -> 'TrainSpec':
        """From a resolved training config (`sg3jax.training.config.resolve`)."""
        lk = run.loss_kwargs
        if run.G_reg_interval is None and lk['pl_weight'] > 0:
            raise NotImplementedError('path-length regularisation without a G_reg_interval (the official '
                                      "'Gboth' phase) is not supported; set config.G_reg_interval")
        if run.D_reg_interval is None and lk['r1_gamma'] > 0:
            raise NotImplementedError("R1 without a D_reg_interval (the official 'Dboth' phase) is not "
                                      'supported; set config.D_reg_interval')
        return cls(
            G_cfg_json=json.dumps(run.G_kwargs.to_dict() if hasattr(run.G_kwargs, 'to_dict') else
                                  dict(run.G_kwargs), sort_keys=True),
            D_cfg_json=json.dumps(run.D_kwargs.to_dict() if hasattr(run.D_kwargs, 'to_dict') else
                                  dict(run.D_kwargs), sort_keys=True),
            batch_size=run.batch_size, batch_gpu=run.batch_gpu, glr=run.glr, dlr=run.dlr,
            G_reg_interval=run.G_reg_interval, D_reg_interval=run.D_reg_interval, r1_gamma=lk['r1_gamma'],
            style_mixing_prob=lk['style_mixing_prob'], pl_weight=lk['pl_weight'],
            pl_batch_shrink=lk['pl_batch_shrink'], pl_decay=lk['pl_decay'],
            blur_init_sigma=lk['blur_init_sigma'], blur_fade_kimg=lk['blur_fade_kimg'], ema_kimg=run.ema_kimg,
            ema_rampup=run.ema_rampup, nan_policy=run.nan_policy, precision=run.precision, remat=run.remat,
            aug=run.aug,
            augpipe=run.augpipe, augment_p=run.p if run.aug == 'fixed' else 0.0, ada_target=run.target,
            ada_interval=run.ada_interval, ada_kimg=run.ada_kimg)

    @property
    def G_cfg(self):
        return json.loads(self.G_cfg_json)

    @property
    def D_cfg(self):
        return json.loads(self.D_cfg_json)

    @property
    def mixed_dtype(self):
        """None (float32 everywhere) or the dtype of the networks' `use_fp16` layers."""
        return None if self.precision == 'float32' else jnp.dtype(self.precision)


def make_optimizer(lr, reg_interval):
    """Adam(betas=(0, 0.99), eps=1e-8) with the lazy-regularisation adjustment (official training_loop.py):
    with a regularisation phase every `reg_interval` minibatches, lr *= r and betas **= r, r = I / (I + 1)."""
    r = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return optax.adam(lr * r, b1=0.0 ** r, b2=0.99 ** r, eps=1e-8)


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


def init_state(key, spec: TrainSpec):
    """The initial training state (G_ema starts as a copy of G, as the official deepcopy)."""
    k_g, k_d = jax.random.split(key)
    G, G_buffers = generator.init(k_g, spec.G_cfg)
    D, _ = discriminator.init(k_d, spec.D_cfg)
    state = {
        'G': G, 'D': D, 'G_ema': jax.tree.map(jnp.copy, G),   # distinct buffers: the state is donated
        'G_opt': make_optimizer(spec.glr, spec.G_reg_interval).init(G),
        'D_opt': freeze_d(make_optimizer(spec.dlr, spec.D_reg_interval), spec.D_cfg).init(D),
        'buffers': {'G': G_buffers, 'G_ema': jax.tree.map(jnp.copy, G_buffers),
                    'pl_mean': jnp.zeros([], jnp.float32)},
        'step': jnp.zeros([], jnp.int32), 'nimg': jnp.zeros([], jnp.int32),
        # First non-finite loss seen: step * 8 + phase id, or -1 (read at log ticks; see nan_policy).
        'nonfinite': jnp.full([], -1, jnp.int32),
    }
    if spec.aug != 'noaug':
        # The augmentation probability and the ADA heuristic's accumulator of sign(D(real)).
        state['augment'] = {'p': jnp.float32(spec.augment_p), **augment_lib.ada_stats_init()}
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


def _apply_update(state, name, grads, loss, spec, phase_id, tx):
    """Optimizer step for net `name` ('G'/'D'), with the non-finite bookkeeping of `spec.nan_policy`."""
    grads = _clean(grads)
    updates, opt = tx.update(grads, state[f'{name}_opt'], state[name])
    params = optax.apply_updates(state[name], updates)
    finite = jnp.isfinite(loss)
    code = state['step'] * 8 + phase_id
    nonfinite = jnp.where(~finite & (state['nonfinite'] < 0), code, state['nonfinite'])
    if spec.nan_policy == 'skip':
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        params, opt = keep(params, state[name]), keep(opt, state[f'{name}_opt'])
    return {**state, name: params, f'{name}_opt': opt, 'nonfinite': nonfinite}


def make_steps(spec: TrainSpec, mesh=None) -> Dict[str, Callable]:
    """{'Gmain', 'Greg', 'Dmain', 'Dreg', 'ema'}: pure (state, batch, key) -> (state, metrics) functions, jitted
    with the state donated; `batch` = {'img': float32 [N,H,W,C] in [-1,1], 'c': [N, c_dim]} sharded on `data`.
    Phases whose regularisation is disabled are absent."""
    G_cfg, D_cfg = spec.G_cfg, spec.D_cfg
    G_tx = make_optimizer(spec.glr, spec.G_reg_interval)
    D_tx = freeze_d(make_optimizer(spec.dlr, spec.D_reg_interval), D_cfg)
    mbstd = chunked_minibatch_std(mesh, spec.batch_gpu)
    z_dim = G_cfg['z_dim']
    # SG2 trains with the dense (non-fused) modconv, as the official fused_modconv_default='inference_only'.
    fused = False if generator.spec(G_cfg).arch == 'stylegan2' else None
    mixed = spec.mixed_dtype
    aug_spec = augment_lib.make_spec(spec.augpipe) if spec.aug != 'noaug' else None

    def augment_fn(state):
        """The augment pipe at the state's current p (a traced scalar: p changes without recompiling)."""
        if aug_spec is None:
            return None
        p = state['augment']['p']
        return lambda x, k: augment_lib.augment(x, k, p, aug_spec)

    def count_signs(state, real_logits):
        """ADA's overfitting heuristic reads sign(D(real)) of every D pass over reals (Dmain and Dreg, as the
        official 'Loss/signs/real' collector), summed over the global batch."""
        if spec.aug != 'ada':
            return state
        return {**state, 'augment': {**state['augment'],
                                     **augment_lib.ada_accumulate(state['augment'], real_logits)}}
    blur_kw = lambda state: dict(blur_sigma=L.blur_sigma_at(state['nimg'], spec.blur_init_sigma,
                                                            spec.blur_fade_kimg),
                                 max_blur_sigma=spec.blur_init_sigma)

    def phase_key(key, state, name):
        return jax.random.fold_in(jax.random.fold_in(key, state['step']), PHASE_IDS[name])

    def G_main(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Gmain'), 3)
        z = jax.random.normal(k[0], (batch['img'].shape[0], z_dim))
        c = _gen_c(k[1], batch['c'])
        f = lambda G: L.loss_Gmain(G, state['buffers']['G'], state['D'], z, c, G_cfg, D_cfg, key=k[2],
                                   style_mixing_prob=spec.style_mixing_prob, mbstd_fn=mbstd,
                                   augment=augment_fn(state),
                                   fused_modconv=fused, mixed_dtype=mixed, remat=spec.remat, **blur_kw(state))
        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(state['G'])
        state = _apply_update(state, 'G', grads, loss, spec, PHASE_IDS['Gmain'], G_tx)
        return state, {'Loss/G/loss': loss, 'Loss/scores/fake': jnp.mean(aux['scores_fake']),
                       'Loss/signs/fake': jnp.mean(jnp.sign(aux['scores_fake']))}

    def G_reg(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Greg'), 3)
        # The pl batch (batch / pl_batch_shrink, official) is drawn here, and placed on the `data` axis: nothing
        # else in this phase reads the sharded batch, so without the constraint XLA ran the whole pl batch on
        # every device (8x the work on 8 chips). Its labels are a random draw from the real batch's, as _gen_c.
        n = batch['img'].shape[0] // spec.pl_batch_shrink
        z = jax.random.normal(k[0], (n, z_dim))
        c = batch['c'][jax.random.permutation(k[1], batch['c'].shape[0])[:n]]
        if mesh is not None and n % mesh.size == 0:     # else (a pl batch smaller than the mesh) replicated
            z, c = (jax.lax.with_sharding_constraint(a, NamedSharding(mesh, P('data'))) for a in (z, c))
        f = lambda G: L.loss_Gpl(G, state['buffers']['G'], state['buffers']['pl_mean'], z, c, G_cfg, key=k[2],
                                 pl_batch_shrink=1, pl_decay=spec.pl_decay,
                                 pl_weight=spec.pl_weight, style_mixing_prob=spec.style_mixing_prob,
                                 fused_modconv=fused, mixed_dtype=mixed, remat=spec.remat)
        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(state['G'])
        grads = jax.tree.map(lambda g: g * spec.G_reg_interval, grads)    # phase gain = interval
        state = _apply_update(state, 'G', grads, loss, spec, PHASE_IDS['Greg'], G_tx)
        state = {**state, 'buffers': {**state['buffers'], 'pl_mean': aux['pl_mean']}}
        return state, {'Loss/pl_penalty': jnp.mean(aux['pl_penalty']), 'Loss/G/reg': loss}

    def D_main(state, batch, key):
        k = jax.random.split(phase_key(key, state, 'Dmain'), 3)
        z = jax.random.normal(k[0], (batch['img'].shape[0], z_dim))
        c = _gen_c(k[1], batch['c'])
        f = lambda D: L.loss_Dmain(D, state['G'], state['buffers']['G'], z, c, batch['img'], batch['c'], G_cfg,
                                   D_cfg, key=k[2], style_mixing_prob=spec.style_mixing_prob, mbstd_fn=mbstd,
                                   augment=augment_fn(state), fused_modconv=fused, mixed_dtype=mixed,
                                   remat=spec.remat, **blur_kw(state))
        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(state['D'])
        state = _apply_update(state, 'D', grads, loss, spec, PHASE_IDS['Dmain'], D_tx)
        # w_avg / magnitude_ema move in the D-main generator pass only (official StyleGAN2Loss).
        state = {**state, 'buffers': {**state['buffers'], 'G': aux['G_buffers']}}
        state = count_signs(state, aux['scores_real'])
        return state, {'Loss/D/loss': loss, 'Loss/scores/real': jnp.mean(aux['scores_real']),
                       'Loss/signs/real': jnp.mean(jnp.sign(aux['scores_real']))}

    def D_reg(state, batch, key):
        k = phase_key(key, state, 'Dreg')
        f = lambda D: L.loss_Dr1(D, batch['img'], batch['c'], D_cfg, r1_gamma=spec.r1_gamma, key=k,
                                 mbstd_fn=mbstd, augment=augment_fn(state), mixed_dtype=mixed, remat=spec.remat,
                                 **blur_kw(state))
        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(state['D'])
        grads = jax.tree.map(lambda g: g * spec.D_reg_interval, grads)    # phase gain = interval
        state = _apply_update(state, 'D', grads, loss, spec, PHASE_IDS['Dreg'], D_tx)
        state = count_signs(state, aux['scores_real'])
        return state, {'Loss/r1_penalty': jnp.mean(aux['r1_penalty']), 'Loss/D/reg': loss}

    def ema(state, batch, key):
        """G_ema = lerp(G, G_ema, beta), beta = 0.5 ** (batch / ema_nimg) with the rampup; buffers copied; then
        the counters advance (official training_loop.py, end of an iteration)."""
        del batch, key
        ema_nimg = spec.ema_kimg * 1000
        if spec.ema_rampup is not None:
            ema_nimg = jnp.minimum(ema_nimg, state['nimg'].astype(jnp.float32) * spec.ema_rampup)
        beta = 0.5 ** (spec.batch_size / jnp.maximum(ema_nimg, 1e-8))
        G_ema = jax.tree.map(lambda p, e: p + beta * (e - p), state['G'], state['G_ema'])
        state = {**state, 'G_ema': G_ema, 'buffers': {**state['buffers'], 'G_ema': state['buffers']['G']},
                 'step': state['step'] + 1, 'nimg': state['nimg'] + spec.batch_size}
        metrics = {'Progress/ema_beta': beta}
        if spec.aug == 'ada':
            # Official "ADA heuristic": every ada_interval minibatches, p moves toward E[sign(D(real))] = target.
            a = state['augment']
            due = state['step'] % spec.ada_interval == 0
            p = augment_lib.ada_update(a['p'], a['sign_sum'], a['count'], target=spec.ada_target,
                                       batch_size=spec.batch_size, interval=spec.ada_interval,
                                       ada_kimg=spec.ada_kimg)
            fresh = augment_lib.ada_stats_init()
            state = {**state, 'augment': {'p': jnp.where(due, p, a['p']),
                                          **{k: jnp.where(due, fresh[k], a[k]) for k in fresh}}}
        if spec.aug != 'noaug':
            metrics['Progress/augment'] = state['augment']['p']
        return state, metrics

    fns = {'Gmain': G_main, 'Dmain': D_main, 'ema': ema}
    if spec.G_reg_interval and spec.pl_weight > 0:
        fns['Greg'] = G_reg
    if spec.D_reg_interval and spec.r1_gamma > 0:
        fns['Dreg'] = D_reg
    jit_kw = {}
    if mesh is not None:
        repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
        jit_kw = dict(in_shardings=(repl, {'img': data, 'c': data}, repl), out_shardings=(repl, repl))
    return {name: jax.jit(fn, donate_argnums=(0,), **jit_kw) for name, fn in fns.items()}


def phases_for_step(step: int, spec: TrainSpec, steps: Dict[str, Callable]):
    """Phase names to run at minibatch `step`, in the official order (G phases, D phases, then the EMA)."""
    names = ['Gmain']
    if 'Greg' in steps and step % spec.G_reg_interval == 0:
        names.append('Greg')
    names.append('Dmain')
    if 'Dreg' in steps and step % spec.D_reg_interval == 0:
        names.append('Dreg')
    names.append('ema')
    return names


def train_step(state, batch, key, spec: TrainSpec, steps: Dict[str, Callable], step: int):
    """Runs one minibatch's phases; returns (state, metrics of every phase run). `step` is the host-side copy of
    state['step'] (so choosing the phases never waits for the device)."""
    metrics = {}
    for name in phases_for_step(step, spec, steps):
        state, m = steps[name](state, batch, key)
        metrics.update(m)
    return state, metrics

"""Update steps on a device mesh: 1 vs 8 devices agree, optimizer and EMA follow the official formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golden import assert_close
from sg3jax.training import steps as steps_lib
from tiny_training import batch as _batch, gradient_recorder, init_state, tiny_run, train_steps


# StyleGAN3-T, conditional, the main phases of G and D: magnitude_ema and w_avg are means over the global batch,
# and so is the style normalisation of every modulated convolution (one RMS of the styles over the whole batch);
# minibatch-std groups within chunks of batch_gpu = 4 samples (shard_map); the label embedding of G and the
# projection of D (tiny_run: 4 synthesis layers). R1 is per sample, its gradient a batch mean like Dmain's.
# StyleGAN2, its own phase (its D is StyleGAN3's): path length, whose batch is drawn inside the step and placed
# on `data`, with style mixing and labels drawn from the real batch.
SHARDING_CASES = [('stylegan3-t', ('Gmain', 'Dmain')), ('stylegan2', ('Greg',))]


@pytest.mark.slow                   # 106-116 s a case on this host
@pytest.mark.parametrize('cfg,phases', SHARDING_CASES)
def test_sharded_gradients_match_single_device(cfg, phases, monkeypatch):
    """Phases of one training step on 1 and on 8 devices, with the optimiser replaced by a recorder of the
    gradients (tiny_training.gradient_recorder), so the parameters stay put and each net's summed phase gradients
    are compared directly: the same to float32 reduction order (measured: at most 2.1e-6 of a tensor's largest
    entry, 2.7e-7 of a loss), as are the losses and the updated buffers. A group or a statistic formed per device
    instead of over the global batch moves them by O(1)."""
    monkeypatch.setattr(steps_lib, 'make_optimizer', gradient_recorder)
    c_dim = 3
    run = tiny_run(cfg=cfg, c_dim=c_dim)
    flops_of = ('Greg',) if cfg == 'stylegan2' else ()
    r1, r8 = (train_steps(run, n, n_steps=1, c_dim=c_dim, phases=phases, flops_of=flops_of) for n in (1, 8))
    (s1, (h1,)), (s8, (h8,)) = (r1['state'], r1['metrics']), (r8['state'], r8['metrics'])
    assert h1.keys() == h8.keys()
    for k in h1:
        assert_close(h8[k], h1[k], rtol=1e-5, atol_rel=1e-5, atol=1e-7, name=k)
    for part in ('G_opt', 'D_opt', 'buffers'):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s1[part]), jax.tree.leaves(s8[part])):
            assert_close(b, a, rtol=0, atol_rel=2e-5, atol=1e-9, name=f'{part}{jax.tree_util.keystr(path)}')
    # The phases really ran and moved something: a nonzero gradient for every parameter the phases train (but
    # ToRGB's biases under the path length alone: it is a property of G's Jacobian, which an output bias leaves
    # as it is).
    assert int(s8['nonfinite']) == -1
    trained = ('G_opt', 'D_opt') if 'Dmain' in phases else ('G_opt',)
    for part in trained:
        for path, g in jax.tree_util.tree_leaves_with_path(s1[part]['grad_sum']):
            name = jax.tree_util.keystr(path)
            assert np.abs(g).max() > 0 or (phases == ('Greg',) and "['torgb']['bias']" in name), name
    if cfg == 'stylegan2':
        assert float(s1['buffers']['pl_mean']) > 0
        # The path-length phase's work is divided between the devices, not repeated on each: its latents are
        # drawn inside the step, and it used to run the whole pl batch on every device (8x the work; the TPU
        # compiler counted 12.2 TFLOP per chip for paper256 at 8 per chip, against 1.8 for the G step at twice
        # its batch; an earlier form of this test measured 1.15 GFLOP per device on 1 device and on 8 before the
        # fix, 0.15 on 8 after). This program: 0.43 GFLOP per device on 1 device, 0.055 on 8.
        one, eight = r1['flops']['Greg'], r8['flops']['Greg']
        assert eight < one / 4, (one, eight)


# test_remat's StyleGAN3 config, so that these tests reuse its compiled initialisation and R1 step when both run
# in one process (test_remat's whole-run test is `slow`).
REMAT_RUN = dict(batch_size=8)


def test_lazy_regularisation_adam_and_ema_formulas():
    run = tiny_run(**REMAT_RUN)
    # Adam with lr * 16/17 and betas ** (16/17), eps 1e-8 (b1 = 0: the update is lr * g / (sqrt(v_hat) + eps)).
    tx = steps_lib.make_optimizer(run.D_opt_kwargs)               # dlr 0.002, D_reg_interval 16
    p = {'w': jnp.ones([3])}
    g = {'w': jnp.asarray([0.5, -2.0, 1e-3])}
    upd, _ = tx.update(g, tx.init(p), p)
    r = 16 / 17
    b2 = 0.99 ** r
    v_hat = (1 - b2) * g['w'] ** 2 / (1 - b2)
    np.testing.assert_allclose(upd['w'], -0.002 * r * g['w'] / (np.sqrt(v_hat) + 1e-8), rtol=1e-6)
    # EMA: beta = 0.5 ** (batch / min(ema_kimg * 1000, nimg * rampup)); buffers copied.
    state = init_state(run)
    state = {**state, 'nimg': jnp.asarray(64, jnp.int32),
             'G': jax.tree.map(lambda x: x + 1.0, state['G']),
             'buffers': {**state['buffers'], 'G': jax.tree.map(lambda x: x * 2.0, state['buffers']['G'])}}
    before = jax.device_get(state)
    new, m = steps_lib.make_steps(run)['ema'](state, None, None)
    beta = 0.5 ** (8 / min(10.0, 64 * 0.05))
    assert float(m['Progress/ema_beta']) == pytest.approx(beta, rel=1e-6)
    w_g, w_e = before['G']['mapping']['fc0']['weight'], before['G_ema']['mapping']['fc0']['weight']
    assert_close(new['G_ema']['mapping']['fc0']['weight'], w_g + beta * (w_e - w_g), name='ema')
    np.testing.assert_array_equal(new['buffers']['G_ema']['mapping']['w_avg'], before['buffers']['G']['mapping']['w_avg'])
    assert int(new['step']) == 1 and int(new['nimg']) == 72


@pytest.mark.parametrize('policy', ['stop', pytest.param('skip', marks=pytest.mark.slow)])
def test_nonfinite_loss_is_recorded_with_step_and_phase(policy):
    """A NaN real image makes the R1 phase's loss NaN."""
    run = tiny_run(nan_policy=policy, **REMAT_RUN)
    steps = steps_lib.make_steps(run)
    state = init_state(run)
    batch = _batch(8)
    batch['img'][0, 0, 0, 0] = np.nan                  # a corrupt real image: D losses become NaN
    batch = jax.tree.map(jnp.asarray, batch)
    opt_before = jax.device_get(state['D_opt'])
    state, m = steps['Dreg'](state, batch, jax.random.key(1))
    assert not np.isfinite(float(m['Loss/D/reg']))
    assert int(state['nonfinite']) == 0 * 8 + steps_lib.PHASE_IDS['Dreg']       # step 0, phase Dreg
    opt_after = jax.device_get(state['D_opt'])
    # 'skip' drops the whole update (Adam's step count included); 'stop' applies the cleaned (nan_to_num) grads,
    # as the official loop, and the trainer stops at the next log tick.
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(opt_before), jax.tree.leaves(opt_after)))
    assert same == (policy == 'skip')


def _D_phases(state, batch, key, run, steps, step):
    """The phases of minibatch `step` that touch D and the augmentation state (Dmain, Dreg, ema): G's phases
    neither read nor change p, so the augmentation tests skip their compiles."""
    metrics = {}
    for name in steps_lib.phases_for_step(step, run):
        if not name.startswith('G'):
            state, m = steps[name](state, jax.tree.map(jnp.asarray, batch), key)
            metrics.update(m)
    return state, metrics


@pytest.mark.slow
def test_ada_heuristic_moves_p_by_the_sign_of_the_real_logits():
    """aug='ada': every D pass over reals (Dmain, Dreg) adds sign(D(real)) to the state's accumulator; after every
    ada_interval-th minibatch p <- max(p + sign(mean - target) * batch * interval / (ada_kimg * 1000), 0) and the
    accumulator resets (official training_loop.py). Also: p is in the state, logged, and changes no shapes."""
    run = tiny_run(batch_size=8, aug='ada', ada_kimg=0.1, target=0.0)
    steps = steps_lib.make_steps(run)
    state = init_state(run)
    assert float(state['augment']['p']) == 0.0
    key, step_size = jax.random.key(1), 8 * 4 / 100
    p = 0.0
    for i in range(8):
        before = jax.device_get(state['augment'])
        state, m = _D_phases(state, _batch(8, seed=i), key, run, steps, i)
        after = jax.device_get(state['augment'])
        # Between updates the signs only accumulate (Dmain's 8, plus Dreg's 8 at step 0); on an update step this
        # step's Dmain signs (its logged mean) complete the sum that decides the direction.
        if (i + 1) % 4:
            assert after['count'] == before['count'] + (16 if i % 16 == 0 else 8)
            assert float(after['p']) == pytest.approx(p)
        else:
            total = before['sign_sum'] + 8 * float(m['Loss/signs/real'])
            count = before['count'] + 8
            p = max(p + float(np.sign(total / count - 0.0)) * step_size, 0.0)
            assert float(after['p']) == pytest.approx(p, abs=1e-6)
            assert after['sign_sum'] == 0 and after['count'] == 0
        assert float(m['Progress/augment']) == pytest.approx(float(after['p']))


@pytest.mark.slow
def test_fixed_augmentation_is_applied_at_p():
    """aug='fixed': p stays at config.p through the steps (the EMA phase, where ADA would move it) and is logged.
    The augment pipe itself runs at the state's p, which is a traced scalar: with p = 0.5 D's loss differs from
    p = 0 (the identity). That part runs ADA's D step (test_ada_heuristic's program; aug='fixed' builds its D
    passes alike), so when both run only the small EMA phase is compiled here."""
    fixed = tiny_run(batch_size=8, aug='fixed', p=0.5)
    state, ema = init_state(fixed), steps_lib.make_steps(fixed)['ema']
    assert float(state['augment']['p']) == 0.5
    for step in range(4):                                # past ada_interval: ADA would have moved p by now
        state, m = ema(state, None, None)
        assert float(m['Progress/augment']) == 0.5 and float(state['augment']['p']) == 0.5
    ada = tiny_run(batch_size=8, aug='ada', ada_kimg=0.1, target=0.0)
    D_main = steps_lib.make_steps(ada)['Dmain']
    losses = {}
    for p in (0.5, 0.0):
        state = init_state(ada)
        state = {**state, 'augment': {**state['augment'], 'p': jnp.float32(p)}}
        state, m = D_main(state, jax.tree.map(jnp.asarray, _batch(8)), jax.random.key(1))
        losses[p] = float(m['Loss/D/loss'])
    assert np.isfinite(losses[0.5]) and losses[0.5] != losses[0.0]

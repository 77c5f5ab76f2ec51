"""StyleGAN2Loss parity: every loss value, intermediate, updated buffer and gradient of the golden
`loss_<name>.npz` steps (one Gmain, Dmain and Dreg phase of the official code).

Tolerances (golden README): values and forward intermediates 1e-5 * max|ref|; grad_G 1e-3 * max|ref| per tensor
(early-layer G gradients carry ~3e-4 relative float32 noise); grad_Dmain 1e-5 and grad_Dreg 1e-4 * max|ref| per
tensor (the README's float32-vs-float64 noise is 2.4e-5 and 2.3e-5; our float32 Dmain gradients meet 1e-5 of the
official float32 ones).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from golden import assert_close, nchw_to_nhwc
from sg3jax.networks import state_dicts
from sg3jax.training import loss as loss_lib

LOSS_CASES = golden.case_files('loss')


@functools.lru_cache(maxsize=None)
def _case(name):
    ref = golden.load(f'loss_{name}')
    g_cfg, d_cfg = golden.json_field(ref, 'G_config_json'), golden.json_field(ref, 'D_config_json')
    # The loss files reuse the G/D case parameters bitwise (README): find them by config.
    g_data = next(golden.load(f'G_{n}') for n in golden.case_files('G')
                  if golden.json_field(golden.load(f'G_{n}'), 'config_json') == g_cfg)
    d_data = next(golden.load(f'D_{n}') for n in golden.case_files('D')
                  if golden.json_field(golden.load(f'D_{n}'), 'config_json') == d_cfg)
    gp, gb = state_dicts.from_state_dict(golden.params_of(g_data), g_cfg, 'G')
    dp, _ = state_dicts.from_state_dict(golden.params_of(d_data), d_cfg, 'D')
    kw = golden.json_field(ref, 'loss_kwargs_json')
    phases = golden.json_field(ref, 'phases_json')
    cur_nimg = phases[0]['cur_nimg']
    sigma = loss_lib.blur_sigma_at(cur_nimg, kw['blur_init_sigma'], kw['blur_fade_kimg'])
    assert_close(sigma, ref['blur_sigma'], name='blur_sigma')
    inputs = dict(z=jnp.asarray(ref['gen_z']), c=jnp.asarray(ref['gen_c']),
                  real=jnp.asarray(nchw_to_nhwc(ref['real_img'])), real_c=jnp.asarray(ref['real_c']))
    # The official StyleGAN2Loss kwargs of the case (augment_pipe None, class_name aside), bound once.
    loss = loss_lib.StyleGAN2Loss(g_cfg, d_cfg, **{k: kw[k] for k in ('r1_gamma', 'style_mixing_prob', 'pl_weight',
                                                                'blur_init_sigma', 'blur_fade_kimg')})
    return ref, loss, gp, gb, dp, kw, inputs, cur_nimg


def _compare_grads(grads, ref, prefix, atol_rel, scale=1.0):
    flat = state_dicts.flatten(grads)
    keys = [k for k in ref if k.startswith(prefix)]
    assert sorted(k[len(prefix):] for k in keys) == sorted(flat)
    for k in keys:
        assert_close(flat[k[len(prefix):]], ref[k] * scale, rtol=0, atol_rel=atol_rel, name=k)


@pytest.mark.parametrize('name', LOSS_CASES)
def test_Gmain_parity(name):
    ref, loss, gp, gb, dp, kw, x, cur_nimg = _case(name)
    f = lambda p: loss.Gmain(p, gb, dp, x['z'], x['c'], cur_nimg=cur_nimg)
    (loss, aux), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(gp)
    assert_close(aux['scores_fake'], ref['gen_logits_Gmain'], name='gen_logits_Gmain')
    assert_close(aux['loss_G'], ref['loss_Gmain'], name='loss_Gmain')
    assert_close(loss, ref['loss_Gmain_mean'], name='loss_Gmain_mean')
    _compare_grads(grads, ref, 'grad_G/', 1e-3)


@pytest.mark.parametrize('name', LOSS_CASES)
def test_Dmain_parity(name):
    ref, loss, gp, gb, dp, kw, x, cur_nimg = _case(name)
    f = lambda p: loss.Dmain(p, gp, gb, x['z'], x['c'], x['real'], x['real_c'], cur_nimg=cur_nimg)
    (loss, aux), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(dp)
    assert_close(aux['scores_fake'], ref['gen_logits_Dmain'], name='gen_logits_Dmain')
    assert_close(aux['loss_Dgen'], ref['loss_Dgen'], name='loss_Dgen')
    assert_close(aux['scores_real'], ref['real_logits'], name='real_logits')
    assert_close(aux['loss_Dreal'], ref['loss_Dreal'], name='loss_Dreal')
    assert_close(aux['loss_Dgen'] + aux['loss_Dreal'], ref['loss_Dgen_plus_Dreal'], name='Loss/D/loss')
    assert_close(loss, ref['loss_Dmain_mean'], name='loss_Dmain_mean')
    # G's buffers are updated in this phase, before they are used (magnitude_ema then input_gain).
    prefix = 'G_buffers_after_Dmain/'
    new_b = state_dicts.flatten(aux['G_buffers'])
    for k in (k for k in ref if k.startswith(prefix)):
        assert_close(new_b[k[len(prefix):]], ref[k], name=k)
    _compare_grads(grads, ref, 'grad_Dmain/', 1e-5)


@pytest.mark.parametrize('name', LOSS_CASES)
def test_Dreg_parity(name):
    """R1 with the lazy-regularisation gain 16, at the golden gamma and at gamma = 10 (the golden gamma = 2 makes
    gamma/2 = 1, which a port that drops gamma would also match): everything scales by 10/2 = 5x. gamma is a
    traced argument, so both run one compiled program."""
    ref, loss, gp, gb, dp, kw, x, cur_nimg = _case(name)
    gain = float(ref['dreg_gain'])

    def f(p, gamma):
        value, aux = dataclasses.replace(loss, r1_gamma=gamma).Dreg(p, x['real'], x['real_c'], cur_nimg=cur_nimg)
        return value * gain, aux
    grad = jax.jit(jax.value_and_grad(f, has_aux=True))
    for gamma in (kw['r1_gamma'], 10.0):
        scale = gamma / kw['r1_gamma']
        (loss, aux), grads = grad(dp, jnp.float32(gamma))
        assert_close(aux['scores_real'], ref['real_logits_Dreg'], name='real_logits_Dreg')
        assert_close(aux['r1_penalty'], ref['r1_penalty'], name='r1_penalty')
        assert_close(aux['loss_Dr1'], ref['loss_Dr1'] * scale, name=f'loss_Dr1 (gamma {gamma})')
        assert_close(loss / gain, ref['loss_Dr1_mean'] * scale, name=f'loss_Dr1_mean (gamma {gamma})')
        # b4.out.bias receives no R1 gradient (the official stores zeros for it; see params_without_grad).
        _compare_grads(grads, ref, 'grad_Dreg/', 1e-4, scale=scale)


def test_blur_matches_official_filter2d():
    """Our traced-sigma blur equals filter2d with the official f = 2^-(k/sigma)^2 / sum (golden ops case)."""
    data = golden.load('ops')
    x = nchw_to_nhwc(data['filter2d/f2_blur_sigma2/x'])
    for max_sigma in (2.0, 10.0):           # a longer tap array with zeroed taps is the same filter
        y = loss_lib.blur(jnp.asarray(x), jnp.float32(2.0), max_sigma)
        assert_close(np.transpose(np.asarray(y), (0, 3, 1, 2)), data['filter2d/f2_blur_sigma2/y'],
                     name=f'blur max_sigma={max_sigma}')
    np.testing.assert_array_equal(loss_lib.blur(jnp.asarray(x), jnp.float32(0.0), 10.0), x)   # sigma 0: identity
    assert float(loss_lib.blur_sigma_at(50_000, 10, 200)) == pytest.approx(7.5)
    assert float(loss_lib.blur_sigma_at(300_000, 10, 200)) == 0

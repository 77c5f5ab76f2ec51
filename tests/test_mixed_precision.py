"""Mixed precision: the official fp16 layers (num_fp16_res highest resolutions) in bfloat16 / float16.

There is no golden reference for this (the official code uses fp16 only on CUDA), so the checks are what the
switch promises: the chosen layers of G and D, and only those, compute in the low-precision dtype; outputs,
gradients and losses stay float32 and within that dtype's rounding of the float32 network and update step; the
parameters, buffers and gradients of the update steps stay float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg3jax.networks import discriminator, generator, presets
from sg3jax.networks.synthesis_sg3 import synthesis_activations
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib
from tiny_training import batch as _batch, gradient_recorder, init_state, tiny_run

# Relative RMS error of the whole network against float32: a few times the dtype's unit roundoff (2^-8 for
# bfloat16, 2^-11 for float16), accumulated over a dozen layers. Measured on the golden 64 px configs: bf16
# 0.5-2.3%, fp16 0.09-0.3%.
REL_RMS = {jnp.bfloat16: 5e-2, jnp.float16: 1e-2}
# Gradients through the low-precision layers: float16 also loses small gradient values to its 5-bit exponent
# (below 6e-5 they are subnormal; the official fp16 training has no loss scaling either). Measured on the D
# below (jitted): input gradient bf16 6.3%, fp16 3.2%; conv weight gradient bf16 2.1%, fp16 1.2%.
GRAD_REL_RMS = 1e-1


def _cfgs(cfg, res=16):
    """Small (16 px, 32 channels) G and D configs with the top resolution in mixed precision (StyleGAN3: the
    layers sampled at 16). XLA:CPU emulates bfloat16/float16 convolutions slowly, so the official-size golden
    configs would take minutes here."""
    g, d = presets.network_configs(cfg, res, batch_size=8, cbase=512, cmax=32, z_dim=16, w_dim=16)
    return {**g, 'num_fp16_res': 1}, {**d, 'num_fp16_res': 1}


def _rel_rms(a, b):
    return float(jnp.sqrt(jnp.mean(jnp.square(a - b))) / jnp.sqrt(jnp.mean(jnp.square(b))))


@pytest.mark.parametrize('cfg,dtype', [('stylegan3-t', jnp.bfloat16),
                                       pytest.param('stylegan3-r', jnp.bfloat16, marks=pytest.mark.slow),
                                       ('stylegan2', jnp.bfloat16), ('stylegan3-t', jnp.float16),
                                       ('stylegan2', jnp.float16)])
def test_generator_close_to_float32(cfg, dtype):
    G_cfg, _ = _cfgs(cfg)
    params, buffers = generator.init(jax.random.key(0), G_cfg)
    z = jax.random.normal(jax.random.key(1), (4, G_cfg['z_dim']))
    # Jitted, as training runs it (op by op, every small op is compiled on its own: most of the test's time).
    ref = jax.jit(lambda p, b: generator.apply(p, b, z, None, G_cfg))(params, buffers)
    out = jax.jit(lambda p, b: generator.apply(p, b, z, None, G_cfg, mixed_dtype=dtype))(params, buffers)
    assert out.dtype == jnp.float32
    err = _rel_rms(out, ref)
    assert 0 < err < REL_RMS[dtype], err          # 0 would mean the switch did nothing


def test_sg3_only_the_fp16_layers_change_dtype():
    G_cfg, _ = _cfgs('stylegan3-t', res=32)       # at 16 px every layer is sampled at 16: all are fp16 layers
    s = generator.spec(G_cfg)
    # Dtypes only: abstract evaluation, nothing compiled or run.
    params, buffers = jax.eval_shape(lambda k: generator.init(k, G_cfg), jax.random.key(0))
    ws = jax.ShapeDtypeStruct((2, s.synthesis.num_ws, G_cfg['w_dim']), jnp.float32)
    _, acts = jax.eval_shape(lambda p, b, w: synthesis_activations(p, b, w, s.synthesis, mixed_dtype=jnp.bfloat16),
                             params['synthesis'], buffers['synthesis'], ws)
    layers = s.synthesis.layers
    assert any(l.use_fp16 for l in layers) and not all(l.use_fp16 for l in layers)
    for l in layers:
        assert acts[l.name].dtype == (jnp.bfloat16 if l.use_fp16 else jnp.float32), l.name


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_discriminator_and_gradients(dtype):
    _, D_cfg = _cfgs('stylegan3-t')
    params, _ = discriminator.init(jax.random.key(0), D_cfg)
    img = jax.random.uniform(jax.random.key(2), (8, 16, 16, 3), minval=-1, maxval=1)
    f = lambda p, x, dt: jnp.sum(discriminator.apply(p, x, None, D_cfg, mixed_dtype=dt))
    grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), static_argnums=2)     # jitted, as in training
    ref, (gp_ref, gx_ref) = grad(params, img, None)
    out, (gp, gx) = grad(params, img, dtype)
    assert 0 < abs(float(out - ref)) < REL_RMS[dtype] * float(jnp.abs(ref))
    assert gx.dtype == jnp.float32 and _rel_rms(gx, gx_ref) < GRAD_REL_RMS
    for a in jax.tree.leaves(gp):
        assert a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a)))
    w = gp['b16']['conv0']['weight']
    assert _rel_rms(w, gp_ref['b16']['conv0']['weight']) < GRAD_REL_RMS


def test_discriminator_only_the_fp16_blocks_change_dtype():
    _, D_cfg = _cfgs('stylegan2', res=32)         # num_fp16_res = 1: the 32 px block only
    spec = discriminator.spec(D_cfg)
    params, _ = jax.eval_shape(lambda k: discriminator.init(k, D_cfg), jax.random.key(0))
    img = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
    for dtype in (jnp.bfloat16, jnp.float16):
        logits, acts = jax.eval_shape(lambda p, x: discriminator.activations(p, x, None, D_cfg, mixed_dtype=dtype),
                                      params, img)
        assert logits.dtype == jnp.float32
        blocks = spec.blocks
        assert any(b.use_fp16 for b in blocks) and not all(b.use_fp16 for b in blocks)
        for b in blocks:
            assert acts[f'{b.name}.x'].dtype == (dtype if b.use_fp16 else jnp.float32), b.name


# Measured on this step (StyleGAN2 16 px, its 16 px layers of G and D in low precision, the G and D main phases)
# against the float32 step: relative RMS error of each net's summed gradients bf16 G 1.7 %, D 2.4 %, fp16 G
# 0.41 %, D 0.17 %; losses (0.02 to 1.7) off by at most 5.9e-4 (bf16) and 2.9e-5 (fp16). The bounds are 2-10x.
STEP_GRAD_REL_RMS = {jnp.bfloat16: 5e-2, jnp.float16: 1e-2}
STEP_LOSS_ERR = {jnp.bfloat16: 5e-3, jnp.float16: 5e-4}


# `slow` (CI runs it; 90 s on this host for bf16); the default suite keeps the G and D closeness tests above.
@pytest.mark.slow
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_mixed_precision_step_close_to_float32(dtype, monkeypatch):
    """The real update steps (Gmain, Dmain) with precision=bfloat16 / float16 give the float32 step's losses and
    gradients to within the dtype's rounding (the optimiser replaced by a recorder of the gradients, which the
    sign-like first Adam step would hide), and every gradient and piece of state stays float32: the master
    weights are float32, only the activations of the fp16 layers are not."""
    monkeypatch.setattr(steps_lib, 'make_optimizer', gradient_recorder)
    batch, key = jax.tree.map(jnp.asarray, _batch(8)), jax.random.key(1)
    results = {}
    for precision in ('float32', jnp.dtype(dtype).name):
        run = tiny_run(batch_size=8, cfg='stylegan2', num_fp16_res=1, precision=precision)
        steps = steps_lib.make_steps(run)
        state, metrics = init_state(run), {}
        for name in ('Gmain', 'Dmain'):
            state, m = steps[name](state, batch, key)
            metrics.update(m)
        results[precision] = jax.device_get(state), jax.device_get(metrics)
    (ref, ref_m), (out, out_m) = results['float32'], results[jnp.dtype(dtype).name]
    for k in ref_m:
        assert abs(float(out_m[k]) - float(ref_m[k])) < STEP_LOSS_ERR[dtype], k
    for net in ('G_opt', 'D_opt'):
        g, g_ref = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(r[net]['grad_sum'])]) for r in (out, ref))
        err = float(np.sqrt(np.mean((g - g_ref) ** 2)) / np.sqrt(np.mean(g_ref ** 2)))
        assert 0 < err < STEP_GRAD_REL_RMS[dtype], (net, err)          # 0 would mean the switch did nothing
    for part in ('G', 'D', 'G_ema', 'G_opt', 'D_opt', 'buffers'):
        for leaf in jax.tree.leaves(out[part]):
            assert leaf.dtype == np.float32, part
    assert int(out['nonfinite']) == -1


def test_precision_reaches_the_update_steps():
    cfg = config_lib.apply_tiny(config_lib.base_config('stylegan3-t'))
    assert steps_lib.mixed_dtype(config_lib.resolve(cfg, num_devices=1)) is None
    cfg.precision = 'bfloat16'
    assert steps_lib.mixed_dtype(config_lib.resolve(cfg, num_devices=1)) == jnp.bfloat16

"""Network API beyond golden parity: official shapes and counts, jit/grad, buffer updates, truncation, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import golden
from golden import assert_close
from sg3jax.networks import state_dicts
from sg3jax.networks import discriminator, generator, presets, synthesis_sg3

# The official train.py configurations at 1024 px and their published G parameter counts.
OFFICIAL_1024 = {name: (presets.network_configs(name, 1024), count) for name, count in
                 (('stylegan3-t', 22.31e6), ('stylegan3-r', 15.09e6), ('stylegan2', 30.37e6))}


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('name', sorted(OFFICIAL_1024))
def test_official_1024_parameter_counts(name):
    (cfg, _), expected = OFFICIAL_1024[name]
    params, _ = jax.eval_shape(lambda k: generator.init(k, cfg), jax.random.key(0))
    assert round(_count(params) / 1e4) == round(expected / 1e4)   # the official summary's 2-decimal millions


def test_presets_follow_official_train_py():
    g, d = presets.network_configs('stylegan3-r', 512, c_dim=3, batch_size=64)
    assert (g['conv_kernel'], g['channel_base'], g['channel_max'], g['use_radial_filters']) == (1, 65536, 1024, True)
    assert g['magnitude_ema_beta'] == 0.5 ** (64 / 20000) and g['mapping_kwargs'] == {'num_layers': 2}
    assert (d['channel_base'], d['channel_max'], d['c_dim']) == (32768, 512, 3)
    g2, _ = presets.network_configs('stylegan2', 256)
    assert g2['mapping_kwargs'] == {'num_layers': 8} and g2['fused_modconv_default'] == 'inference_only'
    params, _ = jax.eval_shape(lambda k: discriminator.init(k, d), jax.random.key(0))
    assert params['mapping']['fc7']['weight'].shape == (512, 512)    # cmap_dim = channels at 4x4
    with pytest.raises(ValueError, match='power of two'):
        presets.network_configs('stylegan3-t', 1000)


def test_sg3t_1024_layer_schedule():
    """Layer names/sizes derived as the official constructor (sizes = sampling rate + 2*margin, last two = R)."""
    s = generator.spec(OFFICIAL_1024['stylegan3-t'][0][0]).synthesis
    assert s.num_ws == 16 and len(s.layers) == 15
    assert s.layers[0].name == 'L0_36_512' and s.layers[-1].name == 'L14_1024_3'
    assert [l.out_size for l in s.layers[-3:]] == [1044, 1024, 1024]
    assert [l.is_critically_sampled for l in s.layers].count(True) == 3   # num_critical=2 plus ToRGB
    assert s.layers[-2].up_taps == 12 and s.layers[-1].up_taps == 1


@functools.lru_cache(maxsize=None)
def _tiny():
    """The golden conditional SG3-T (32 px) G and D, parity-checked weights, for API tests."""
    g = golden.load('G_sg3t_32_cond')
    d = golden.load('D_32_cond')
    g_cfg, d_cfg = golden.json_field(g, 'config_json'), golden.json_field(d, 'config_json')
    gp, gb = state_dicts.from_state_dict(golden.params_of(g), g_cfg, 'G')
    dp, _ = state_dicts.from_state_dict(golden.params_of(d), d_cfg, 'D')
    return g, g_cfg, gp, gb, d_cfg, dp


def test_update_emas_returns_updated_buffers_and_mutates_nothing():
    g, g_cfg, gp, gb, _, _ = _tiny()
    z, c = jnp.asarray(g['z']), jnp.asarray(g['c'])
    before = jax.tree.map(np.array, gb)
    img, nb = jax.jit(lambda p, b: generator.apply_update_emas(p, b, z, c, g_cfg))(gp, gb)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, gb), before)   # input untouched

    s = generator.spec(g_cfg)
    ws = jax.jit(lambda p, b: generator.mapping(p, b, z, c, g_cfg))(gp, gb)
    beta = s.mapping_kwargs['w_avg_beta']
    w_mean = np.asarray(ws[:, 0]).mean(0)
    assert_close(nb['mapping']['w_avg'], w_mean + beta * (before['mapping']['w_avg'] - w_mean), name='w_avg')

    # magnitude_ema of layer i tracks the mean square of its input (the previous layer's output).
    _, acts = jax.jit(lambda p, b, ws: synthesis_sg3.synthesis_activations(p, b, ws, s.synthesis))(
        gp['synthesis'], gb['synthesis'], ws)
    beta = s.synthesis.magnitude_ema_beta
    prev = 'input'
    for layer in s.synthesis.layers:
        cur = float(jnp.mean(jnp.square(acts[prev])))
        old = float(before['synthesis'][layer.name]['magnitude_ema'])
        assert_close(nb['synthesis'][layer.name]['magnitude_ema'], cur + beta * (old - cur), name=layer.name)
        prev = layer.name
    # The image of the update pass uses the *updated* magnitude_ema, as the official forward does.
    img_after = jax.jit(lambda p, b, ws: generator.synthesis(p, b, ws, g_cfg))(gp, nb, ws)
    assert_close(img, img_after, name='img with updated buffers')
    # Frozen fields are carried over unchanged.
    np.testing.assert_array_equal(nb['synthesis']['input']['freqs'], before['synthesis']['input']['freqs'])


def test_truncation_cutoff_and_traced_psi():
    g, g_cfg, gp, gb, _, _ = _tiny()
    z, c = jnp.asarray(g['z']), jnp.asarray(g['c'])
    ws = generator.mapping(gp, gb, z, c, g_cfg)
    w_avg = np.asarray(gb['mapping']['w_avg'])
    f = jax.jit(lambda psi, cutoff: generator.mapping(gp, gb, z, c, g_cfg, truncation_psi=psi,
                                                      truncation_cutoff=cutoff))
    out = np.asarray(f(0.5, 8))
    expect = np.asarray(ws).copy()
    expect[:, :8] = w_avg + 0.5 * (expect[:, :8] - w_avg)
    assert_close(out, expect, name='psi=0.5 cutoff=8')
    assert_close(f(0.0, 16)[:, 3], np.broadcast_to(w_avg, (4, w_avg.shape[0])), name='psi=0 gives w_avg')


def test_bad_inputs_name_the_field():
    g, g_cfg, gp, gb, d_cfg, dp = _tiny()
    with pytest.raises(ValueError, match=r'c must have shape \[N, 10\]'):
        generator.mapping(gp, gb, jnp.zeros([2, 64]), None, g_cfg)
    with pytest.raises(ValueError, match=r'ws must have shape \[N, 16, 64\]'):
        generator.synthesis(gp, gb, jnp.zeros([2, 15, 64]), g_cfg)
    with pytest.raises(ValueError, match='class_name .* is not one of'):
        generator.init(jax.random.key(0), dict(g_cfg, class_name='training.networks.Generator'))
    with pytest.raises(ValueError, match='unknown StyleGAN3 synthesis option'):
        generator.spec(dict(g_cfg, conv_kernal=1))
    with pytest.raises(ValueError, match='img must have shape'):
        discriminator.apply(dp, jnp.zeros([2, 3, 32, 32]), jnp.zeros([2, 10]), d_cfg)   # NCHW by mistake
    with pytest.raises(ValueError, match='block_kwargs.freeze_layers must be a non-negative int'):
        discriminator.spec(dict(d_cfg, block_kwargs={'freeze_layers': -1}))


def test_init_matches_official_initialisation_rules():
    """Fresh init: SG3 affine biases start at 1 (input affine at [1,0,0,0]), FC weights scaled by 1/lr_mult, and
    the input's Fourier features as the official SynthesisInput draws them: f = g / (|g| exp(|g|^2 / 4)) *
    bandwidth for g ~ N(0, I2), so |f| < bandwidth with (|f| / bandwidth)^2 = exp(-|g|^2 / 2) uniform on (0, 1)
    and the directions uniform; phases uniform on [-0.5, 0.5)."""
    cfg = dict(arch='stylegan3', z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
               channel_base=2048, channel_max=512, num_layers=4, num_critical=1)
    p, b = jax.jit(lambda k: generator.init(k, cfg))(jax.random.key(0))
    np.testing.assert_array_equal(p['synthesis']['input']['affine']['bias'], [1, 0, 0, 0])
    np.testing.assert_array_equal(p['synthesis']['input']['affine']['weight'], 0)
    layer0 = generator.spec(cfg).synthesis.layers[0].name
    np.testing.assert_array_equal(p['synthesis'][layer0]['affine']['bias'], 1)
    assert 50 < float(jnp.std(p['mapping']['fc0']['weight'])) < 150    # N(0, 1) / 0.01
    freqs, phases = np.asarray(b['synthesis']['input']['freqs']), np.asarray(b['synthesis']['input']['phases'])
    bandwidth = generator.spec(cfg).synthesis.input_bandwidth
    assert freqs.shape == (512, 2) and bandwidth == 2.0
    radius = np.linalg.norm(freqs, axis=1) / bandwidth
    assert radius.max() < 1
    assert scipy.stats.kstest(radius ** 2, 'uniform').pvalue > 1e-3
    assert scipy.stats.kstest(np.arctan2(freqs[:, 1], freqs[:, 0]), 'uniform', args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
    assert phases.min() >= -0.5 and phases.max() < 0.5
    assert scipy.stats.kstest(phases, 'uniform', args=(-0.5, 1)).pvalue > 1e-3
    img = jax.jit(lambda p, b, z: generator.apply(p, b, z, None, cfg))(p, b, jnp.ones([2, 8]))
    assert img.shape == (2, 16, 16, 3) and np.all(np.isfinite(img))

"""Equivariance operators against independent NumPy versions of the official steps, EQ-T/EQ-T_frac/EQ-R on
synthetic generators with known behaviour, a real tiny StyleGAN3-T end to end, and calc_metric end to end
(dataset statistics cache, FID/KID/PR/IS/PPL plumbing) with cheap stand-in feature networks."""

import json

import numpy as np
import jax
import jax.numpy as jnp
import PIL.Image
import pytest

from tiny_metrics import fake_detectors, tiny_generator
from sg3jax.data import convert_dataset
from sg3jax.metrics import equivariance as eq, metric_main
from sg3jax.sampling.export import export_generator

#----------------------------------------------------------------------------
# Operators.

def _official_integer_translation(x, tx, ty):  # NumPy transcription of the official slicing, [H, W, C]
    h, w, _ = x.shape
    ix, iy = int(np.round(tx * w)), int(np.round(ty * h))
    z, m = np.zeros_like(x), np.zeros_like(x)
    if abs(ix) < w and abs(iy) < h:
        z[max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)] = x[max(-iy, 0):h + min(-iy, 0),
                                                                    max(-ix, 0):w + min(-ix, 0)]
        m[max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)] = 1
    return z, m


def _official_fractional_translation(x, tx, ty, a=3):
    """The official steps: 6-tap Lanczos filters, filter2d with padding [b, a] per axis (true convolution,
    zero padding), crop and place, rectangular mask."""
    h, w, _ = x.shape
    tx, ty = tx * w, ty * h
    ix, iy = int(np.floor(tx)), int(np.floor(ty))
    fx, fy = tx - ix, ty - iy
    b = a - 1
    taps = np.arange(a * 2) - b
    fxf = np.sinc(taps - fx) * np.sinc((taps - fx) / a)
    fyf = np.sinc(taps - fy) * np.sinc((taps - fy) / a)
    fxf, fyf = fxf / fxf.sum(), fyf / fyf.sum()
    # filter2d pads [fw//2 + b, (fw-1)//2 + a] = [5, 5]; true convolution -> np.convolve 'valid' on the padded row.
    xp = np.pad(x, [(0, 0), (5, 5), (0, 0)])
    y = np.apply_along_axis(lambda r: np.convolve(r, fxf, mode='valid'), 1, xp)
    yp = np.pad(y, [(5, 5), (0, 0), (0, 0)])
    y = np.apply_along_axis(lambda r: np.convolve(r, fyf, mode='valid'), 0, yp)
    z = np.zeros_like(x)
    zx0, zy0, zx1, zy1 = max(ix - b, 0), max(iy - b, 0), min(ix + a, 0) + w, min(iy + a, 0) + h
    if zx0 < zx1 and zy0 < zy1:
        z[zy0:zy1, zx0:zx1] = y[max(b - iy, 0):h + b + a + min(-iy - a, 0), max(b - ix, 0):w + b + a + min(-ix - a, 0)]
    m = np.zeros_like(x)
    mx0, my0, mx1, my1 = max(ix + a, 0), max(iy + a, 0), min(ix - b, 0) + w, min(iy - b, 0) + h
    if mx0 < mx1 and my0 < my1:
        m[my0:my1, mx0:mx1] = 1
    return z, m


@pytest.mark.parametrize('t', [(0.0, 0.0), (0.125, -0.0625), (-0.25, 0.1875), (1.5, 0.0)])
def test_integer_translation_matches_official_slicing(t):
    x = np.random.default_rng(0).standard_normal((16, 16, 2)).astype(np.float32)
    z, m = eq.apply_integer_translation(jnp.asarray(x), *t)
    rz, rm = _official_integer_translation(x, *t)
    np.testing.assert_array_equal(np.asarray(m), rm)
    np.testing.assert_allclose(np.asarray(z), rz, atol=1e-6)


@pytest.mark.parametrize('t', [(0.03, -0.07), (-0.11, 0.09), (0.0, 0.0), (0.2, 0.33)])
def test_fractional_translation_matches_official_steps(t):
    x = np.random.default_rng(1).standard_normal((16, 16, 2))
    z, m = jax.jit(eq.apply_fractional_translation)(jnp.asarray(x, jnp.float32), *t)
    rz, rm = _official_fractional_translation(x, *t)
    np.testing.assert_array_equal(np.asarray(m), rm)
    np.testing.assert_allclose(np.asarray(z), rz, atol=1e-5)


def test_bandlimit_filters_are_normalised_and_sized():
    build = jax.jit(eq.construct_affine_bandlimit_filter, static_argnames=('a', 'amax', 'up'))
    f = build(eq.rotation_matrix(jnp.float32(0.3)), a=3, amax=6)
    assert f.shape == (47, 47)
    assert float(f.sum()) == pytest.approx(1.0, abs=1e-5)
    g = build(eq.rotation_matrix(jnp.float32(-0.3)), a=3, amax=6, up=1)
    assert g.shape == (11, 11) and float(g.sum()) == pytest.approx(1.0, abs=1e-5)

#----------------------------------------------------------------------------
# Synthetic generators: an image is a smooth band-limited pattern f evaluated at M @ [x, y, 1], the way the
# StyleGAN3 input layer applies its transform to its Fourier features.

RES = 32


def _pattern_synth(follow_transform):
    k = np.array([[1.0, 2.0], [-3.0, 1.0], [2.0, -2.0]], np.float32)   # cycles per image: well below Nyquist
    ph = np.array([0.3, 1.1, 2.0], np.float32)
    c = (jnp.arange(RES, dtype=jnp.float32) + 0.5) / RES - 0.5

    def synth(ws, m):
        if not follow_transform:
            m = jnp.broadcast_to(jnp.eye(3), m.shape)
        xx, yy = jnp.meshgrid(c, c, indexing='xy')
        p = jnp.stack([xx, yy, jnp.ones_like(xx)], -1)                 # [H, W, 3]
        q = jnp.einsum('nij,hwj->nhwi', m, p)[..., :2]
        img = jnp.sum(jnp.sin(2 * np.pi * jnp.einsum('nhwi,ki->nhwk', q, k) + ph + ws[:, None, None, :1]), -1)
        return jnp.stack([img, -img, img * 0.5], -1) / 3
    return synth


@pytest.mark.parametrize('which', ['compute_eqt_int', 'compute_eqt_frac', 'compute_eqr'])
def test_equivariant_pattern_scores_high_and_invariant_pattern_low(which):
    ws = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3)), jnp.float32)
    psnr = {}
    for follow in (True, False):
        s = jax.jit(lambda w, k: eq.equivariance_sums(_pattern_synth(follow), w, k, RES, **{which: True}))(
            ws, jax.random.key(1))
        psnr[follow] = eq.psnr_from_sums(*np.asarray(s[0], np.float64))
    assert psnr[True] > 40, psnr
    assert psnr[False] < 20, psnr

#----------------------------------------------------------------------------
# End to end.

@pytest.mark.slow
def test_tiny_stylegan3_equivariance_runs_end_to_end():
    G = tiny_generator()
    r = metric_main.calc_metric('eqt50k_int', G=G, num_gen=8, progress=False)
    assert r['metric'] == 'eqt50k_int' and np.isfinite(r['results']['eqt50k_int'])
    assert r['num_gpus'] == 8 and r['overrides'] == dict(num_gen=8, max_real=None)
    with pytest.raises(ValueError, match='StyleGAN3'):
        metric_main.calc_metric('eqr50k', G=tiny_generator('stylegan2'), num_gen=8, progress=False)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('metric_ds')
    (root / 'src').mkdir()
    for i in range(20):
        img = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        PIL.Image.fromarray(img).save(root / 'src' / f'{i:02d}.png')
    convert_dataset(root / 'src', root / 'ds', progress=False)
    return str(root / 'ds')


def test_calc_metric_end_to_end_with_cache_and_report(dataset, tmp_path):
    G = tiny_generator('stylegan2')                                 # compiles 3x faster than SG3 on CPU
    kw = dict(G=G, dataset=dataset, cache_dir=str(tmp_path / 'cache'), detectors=fake_detectors(), num_gen=16,
              batch_size=8, progress=False)
    r1 = metric_main.calc_metric('fid50k_full', **kw)
    cached = list((tmp_path / 'cache' / 'gan-metrics').glob('ds-inception-*.npz'))
    assert len(cached) == 1
    r2 = metric_main.calc_metric('fid50k_full', **kw)             # dataset statistics from the cache
    assert r1['results'] == r2['results'] and r1['results']['fid50k_full'] > 0
    # Mirror doubles the items of the legacy metric; the _full metric ignores it.
    metric_main.calc_metric('fid50k', **dict(kw, mirror=True))
    assert len(list((tmp_path / 'cache' / 'gan-metrics').glob('ds-inception-*.npz'))) == 2
    r = metric_main.calc_metric('kid50k_full', **kw)                # same compiled step as FID
    assert np.isfinite(r['results']['kid50k_full'])
    metric_main.report_metric(r, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'snap'))
    rec = json.loads((tmp_path / 'metric-kid50k_full.jsonl').read_text())
    assert rec['snapshot_pkl'] == 'snap' and rec['num_gpus'] == 8


@pytest.mark.slow
def test_calc_metric_is_pr_ppl_end_to_end(dataset, tmp_path):
    kw = dict(G=tiny_generator('stylegan2'), dataset=dataset, cache_dir=str(tmp_path / 'cache'),
              detectors=fake_detectors(), num_gen=16, batch_size=8, progress=False)
    for name, keys in [('is50k', ['is50k_mean', 'is50k_std']),
                       ('pr50k3_full', ['pr50k3_full_precision', 'pr50k3_full_recall']), ('ppl2_wend', ['ppl2_wend']),
                       ('ppl_zfull', ['ppl_zfull'])]:
        r = metric_main.calc_metric(name, **kw)
        assert sorted(r['results']) == sorted(keys) and all(np.isfinite(v) for v in r['results'].values()), r
    assert r['results']['ppl_zfull'] >= 0


def test_calc_metrics_cli_on_an_export_in_a_run_dir(tmp_path, capsys):
    from sg3jax import calc_metrics
    params, buffers, g_cfg = tiny_generator()                       # same config as above: compiled step reused
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'stats.jsonl').write_text('')
    export_generator(run / 'network-snapshot-000000', params, buffers, g_cfg)
    rc = calc_metrics.main(['--network', str(run / 'network-snapshot-000000'), '--metrics', 'eqt50k_int',
                            '--num-gen', '8', '--verbose', '0'])
    assert rc == 0
    rec = json.loads((run / 'metric-eqt50k_int.jsonl').read_text())
    assert rec['snapshot_pkl'] == 'network-snapshot-000000' and np.isfinite(rec['results']['eqt50k_int'])
    assert 'eqt50k_int' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        calc_metrics.main(['--network', str(run), '--metrics', 'fid1k'])
    assert 'unknown fid1k' in capsys.readouterr().err
    with pytest.raises(SystemExit):                                  # one usage line, before anything compiles
        calc_metrics.main(['--network', str(run / 'network-snapshot-000000'), '--metrics', 'eqt50k_int',
                           '--num-devices', '9', '--verbose', '0'])
    assert 'error: eqt50k_int: num_devices (9) must be between 1 and the 8 devices present' in capsys.readouterr().err

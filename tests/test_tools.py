"""The sampling tools: gen_images, gen_video, gen_style_mix, avg_spectra, and load_generator.

One tiny unconditional and one tiny conditional StyleGAN3-T export (16 px) serve every test (module fixtures);
the CLIs run in-process through main(argv), so compiled functions are shared (sampling caches them per config).
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import golden
import pkl_fixtures
from sg3jax import avg_spectra, gen_images, gen_style_mix, gen_video, sampling
from sg3jax.networks import generator, presets
from sg3jax.sampling import cli, load
from sg3jax.sampling.export import export_generator

BATCH = ['--batch-size', '4']


def _cfg(c_dim=0, arch='stylegan3-t'):
    g, _ = presets.network_configs(arch, 16, c_dim=c_dim, cbase=512, cmax=32, z_dim=16, w_dim=16)
    return g


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp('nets')
    out = {}
    for name, c_dim, seed in [('uncond', 0, 0), ('cond', 3, 1)]:
        cfg = _cfg(c_dim)
        params, buffers = jax.jit(lambda k, cfg=cfg: generator.init(k, cfg))(jax.random.key(seed))
        # A non-zero w_avg, so truncation toward it is visible (a fresh network's w_avg is zero).
        buffers = {**buffers, 'mapping': {**buffers['mapping'], 'w_avg': jax.random.normal(jax.random.key(9), (16,))}}
        export_generator(root / name, params, buffers, cfg)
        out[name] = root / name
        out[name + '_G'] = sampling.Generator(params, buffers, cfg)
    return out


def _files(d):
    return sorted(p.name for p in d.iterdir())


def _png(path):
    return np.asarray(Image.open(path))


def _usage_error(capsys, main, argv, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err

#----------------------------------------------------------------------------
# Parsers and the transform.

def test_parse_range_matches_official_syntax():
    assert cli.parse_range('1,2,5-10') == [1, 2, 5, 6, 7, 8, 9, 10]
    assert cli.parse_range('0-31,40') == list(range(32)) + [40]
    assert cli.parse_range('7') == [7]
    for bad in ['a-b', '1,,2', '5-3', '-1', '1.5', '']:
        with pytest.raises(cli.ToolError, match='--seeds'):
            cli.parse_range(bad)
    with pytest.raises(cli.ToolError, match=r'2\*\*32'):
        cli.parse_seeds('4294967296')
    assert cli.parse_vec2('0.3,1') == (0.3, 1.0)
    for bad in ['1', '1,2,3', 'a,b', 'nan,0']:
        with pytest.raises(cli.ToolError, match='--translate'):
            cli.parse_vec2(bad)
    assert cli.parse_tuple('4x2') == (4, 2) and cli.parse_tuple('3,1') == (3, 1)
    with pytest.raises(cli.ToolError, match='--grid'):
        cli.parse_tuple('4x')


def test_make_transform_known_answer_and_golden():
    m = sampling.make_transform((0.5, -0.25), 90)
    np.testing.assert_allclose(m, [[0, 1, 0.5], [-1, 0, -0.25], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(sampling.input_transform((0.5, -0.25), 90) @ m, np.eye(3), atol=1e-6)
    # The transforms the official code wrote into its buffer for the golden cases (gen_images' make_transform).
    d = golden.load('G_sg3t_64')
    p = golden.json_field(d, 'transform_params_json')
    golden.assert_close(sampling.input_transform(p['translate'], p['angle']), d['transform'], name='transform')
    for i, p in enumerate(golden.json_field(d, 'transforms_multi_params_json')):
        golden.assert_close(sampling.input_transform(p['translate'], p['angle']), d['transforms_multi'][i])


def test_z_from_seeds_is_the_official_latent():
    z = sampling.z_from_seeds([5, 123], 8)
    np.testing.assert_array_equal(z[1], np.random.RandomState(123).randn(1, 8)[0].astype(np.float32))

#----------------------------------------------------------------------------
# load_generator.

def test_load_generator_export_workdir_and_errors(nets, tmp_path):
    G = nets['uncond_G']
    params, buffers, cfg = load.load_generator(nets['uncond'])
    assert cfg == G.cfg
    # A training workdir: the newest complete network-snapshot-* wins; temporaries and incomplete ones do not.
    wd = tmp_path / 'run'
    shifted = jax.tree.map(lambda x: x + 1, G.params)
    export_generator(wd / 'network-snapshot-000004', G.params, G.buffers, G.cfg)
    export_generator(wd / 'network-snapshot-000012', shifted, G.buffers, G.cfg)
    (wd / 'network-snapshot-000020').mkdir()                         # no generator.json: incomplete
    (wd / '.network-snapshot-000040.tmp-x').mkdir()
    assert load.resolve(wd) == ('export', wd / 'network-snapshot-000012')
    p2, _, _ = load.load_generator(wd)
    np.testing.assert_array_equal(p2['mapping']['fc0']['weight'], shifted['mapping']['fc0']['weight'])
    with pytest.raises(cli.ToolError, match='no such file'):
        load.load_generator(tmp_path / 'missing')
    with pytest.raises(cli.ToolError, match='no generator.json and no complete network-snapshot'):
        load.load_generator(tmp_path / 'run' / 'network-snapshot-000020')
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(cli.ToolError, match='expected an NVIDIA .pkl'):
        load.load_generator(tmp_path / 'x.txt')
    with pytest.raises(cli.ToolError, match='URLs are not fetched'):
        load.load_generator('https://example.com/net.pkl')


def test_the_former_import_paths_name_the_same_functions():
    """sg3jax.tools (before sg3jax.sampling) and training.checkpoint's export names, kept for user code."""
    from sg3jax import tools
    from sg3jax.sampling import export, generate
    from sg3jax.training import checkpoint
    assert tools.sampling is generate and tools.load is load and tools.cli is cli
    assert tools.sampling.render_seeds is sampling.render_seeds
    assert checkpoint.restore_generator is export.restore_generator is sampling.restore_generator
    assert checkpoint.export_generator is export.export_generator


def test_the_former_planner_and_state_dict_paths():
    """sg3jax.launch (before sg3jax.planning) and sg3jax.convert (before networks.state_dicts): the same functions,
    and `python -m sg3jax.launch.plan` still runs the planner's command line."""
    from sg3jax import convert
    from sg3jax.launch import chips as old_chips, plan as old_plan, plan_table as old_table
    from sg3jax.networks import state_dicts
    from sg3jax.planning import chips, plan, plan_table
    assert convert.from_state_dict is state_dicts.from_state_dict and convert.flatten is state_dicts.flatten
    assert old_plan.make_plan is plan.make_plan and old_table.plan_row is plan_table.plan_row
    assert old_chips.CHIPS is chips.CHIPS
    r = subprocess.run([sys.executable, '-m', 'sg3jax.launch.plan', '--helpshort'], capture_output=True, text=True,
                       timeout=60)
    assert 'python -m sg3jax.planning.plan --config' in r.stdout, r.stderr    # (absl's help exits with 1)


def test_load_generator_pkl_goes_through_legacy(nets, tmp_path, monkeypatch):
    G = nets['uncond_G']
    seen = []

    def load_network_pkl(path):
        seen.append(path)
        return {'G_ema': {'cfg': G.cfg, 'params': G.params, 'buffers': G.buffers}, 'G': None, 'D': None}
    monkeypatch.setattr(load.legacy, 'load_network_pkl', load_network_pkl)
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(b'not really')
    params, buffers, cfg = load.load_generator(pkl)
    assert seen == [pkl] and cfg is G.cfg and params is G.params
    gen_images.main(['--network', str(pkl), '--seeds', '3', '--outdir', str(tmp_path / 'o')] + BATCH)
    assert _files(tmp_path / 'o') == ['seed0003.png']

#----------------------------------------------------------------------------
# gen_images.

def test_gen_images_names_determinism_and_pixels(nets, tmp_path):
    G = nets['uncond_G']
    a, b = tmp_path / 'a', tmp_path / 'b'
    gen_images.main(['--network', str(nets['uncond']), '--seeds', '0-4,40', '--trunc', '0.7', '--outdir', str(a)]
                    + BATCH)
    assert _files(a) == ['seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0003.png', 'seed0004.png',
                         'seed0040.png']                                   # official names; no temporaries left
    gen_images.main(['--network', str(nets['uncond']), '--seeds', '40,3', '--trunc', '0.7', '--outdir', str(b)]
                    + BATCH)
    for name in ['seed0003.png', 'seed0040.png']:                          # same seed -> same PNG bytes
        assert (a / name).read_bytes() == (b / name).read_bytes()
    imgs = [_png(a / f'seed{s:04d}.png') for s in (0, 1, 2)]
    assert imgs[0].shape == (16, 16, 3) and imgs[0].dtype == np.uint8
    assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[1], imgs[2])
    # Known answer: the official recipe, z = RandomState(seed).randn(1, z_dim), uint8 = clamp(x*127.5+128).
    z = np.random.RandomState(40).randn(1, 16)
    x = np.asarray(jax.jit(lambda p, b, z: generator.apply(p, b, z, None, G.cfg, truncation_psi=0.7))(
        G.params, G.buffers, z))[0]
    ref = np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.abs(ref.astype(int) - _png(a / 'seed0040.png')).max() <= 1


def test_gen_images_trunc_cutoff_translate_rotate(nets, tmp_path):
    G = nets['uncond_G']
    net = str(nets['uncond'])
    gen_images.main(['--network', net, '--seeds', '5', '--trunc', '0', '--outdir', str(tmp_path / 'p0')] + BATCH)
    gen_images.main(['--network', net, '--seeds', '6', '--trunc', '0', '--outdir', str(tmp_path / 'p0')] + BATCH)
    # psi = 0 sends every seed to w_avg: identical images.
    np.testing.assert_array_equal(_png(tmp_path / 'p0/seed0005.png'), _png(tmp_path / 'p0/seed0006.png'))
    gen_images.main(['--network', net, '--seeds', '5', '--trunc', '0', '--trunc-cutoff', '2',
                     '--outdir', str(tmp_path / 'c2')] + BATCH)
    ws = sampling.mapping(G, sampling.z_from_seeds([5], 16), np.zeros([1, 0]), psi=0.0, cutoff=2)
    w_avg = np.asarray(G.buffers['mapping']['w_avg'])
    np.testing.assert_allclose(ws[0, :2], np.broadcast_to(w_avg, (2, 16)), rtol=1e-6)
    assert not np.allclose(ws[0, 2:], w_avg)
    assert not np.array_equal(_png(tmp_path / 'c2/seed0005.png'), _png(tmp_path / 'p0/seed0005.png'))
    gen_images.main(['--network', net, '--seeds', '5', '--translate', '0.3,1', '--rotate', '10',
                     '--outdir', str(tmp_path / 't')] + BATCH)
    gen_images.main(['--network', net, '--seeds', '5', '--outdir', str(tmp_path / 'n')] + BATCH)
    t = sampling.input_transform((0.3, 1.0), 10.0)
    ws = sampling.mapping(G, sampling.z_from_seeds([5], 16), np.zeros([1, 0]))
    x = jax.jit(lambda p, b, ws, t: generator.synthesis(p, b, ws, G.cfg, transform=t))(G.params, G.buffers, ws, t)
    ref = np.clip(np.asarray(x)[0] * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.abs(ref.astype(int) - _png(tmp_path / 't/seed0005.png')).max() <= 1
    assert not np.array_equal(_png(tmp_path / 't/seed0005.png'), _png(tmp_path / 'n/seed0005.png'))


def test_gen_images_class_conditional(nets, tmp_path):
    G = nets['cond_G']
    net = str(nets['cond'])
    for k in (0, 2):
        gen_images.main(['--network', net, '--seeds', '1-2', '--class', str(k), '--trunc', '0',
                         '--outdir', str(tmp_path / f'w{k}')] + BATCH)
        gen_images.main(['--network', net, '--seeds', '1-2', '--class', str(k), '--trunc', '0', '--trunc-center',
                         'class', '--outdir', str(tmp_path / f'k{k}')] + BATCH)
    # By default (official) psi = 0 truncates every class to the global w_avg: one image for all seeds and classes.
    for f in ('w0/seed0002.png', 'w2/seed0001.png'):
        np.testing.assert_array_equal(_png(tmp_path / f), _png(tmp_path / 'w0/seed0001.png'))
    # --trunc-center=class: to the class mean, so seeds agree within a class and classes differ.
    np.testing.assert_array_equal(_png(tmp_path / 'k0/seed0001.png'), _png(tmp_path / 'k0/seed0002.png'))
    assert not np.array_equal(_png(tmp_path / 'k0/seed0001.png'), _png(tmp_path / 'k2/seed0001.png'))
    assert not np.array_equal(_png(tmp_path / 'k0/seed0001.png'), _png(tmp_path / 'w0/seed0001.png'))
    # The class mean is the mean mapped w of that class.
    mean = sampling.class_mean_w(G, 2, num=2000, batch_size=1000)
    z = jax.random.normal(jax.random.fold_in(jax.random.key(0), 0), (1000, 16))
    z = np.concatenate([z, jax.random.normal(jax.random.fold_in(jax.random.key(0), 1000), (1000, 16))])
    c = sampling.labels(G, 2, 2000)
    ref = np.asarray(jax.jit(lambda p, b, z, c: generator.mapping(p, b, z, c, G.cfg))(G.params, G.buffers, z,
                                                                                       c))[:, 0].mean(0)
    np.testing.assert_allclose(mean, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, sampling.class_mean_w(G, 0, num=2000, batch_size=1000))


def test_gen_images_argument_errors(nets, tmp_path, capsys):
    out = ['--outdir', str(tmp_path / 'o')]
    u, c = str(nets['uncond']), str(nets['cond'])
    _usage_error(capsys, gen_images.main, ['--network', u, '--seeds', '1-x'] + out, "--seeds '1-x'")
    _usage_error(capsys, gen_images.main, ['--network', u, '--seeds', '1', '--translate', '0.3'] + out,
                 "--translate '0.3'")
    _usage_error(capsys, gen_images.main, ['--network', c, '--seeds', '1'] + out, 'must specify class label')
    _usage_error(capsys, gen_images.main, ['--network', u, '--seeds', '1', '--trunc', '0.5', '--trunc-center',
                                           'class'] + out, '--trunc-center=class needs a conditional network')
    _usage_error(capsys, gen_images.main, ['--network', c, '--seeds', '1', '--class', '3'] + out,
                 '--class=3 is out of range: this network has c_dim=3')
    _usage_error(capsys, gen_images.main, ['--network', u, '--seeds', '1', '--trunc-cutoff', '-1'] + out,
                 '--trunc-cutoff must be >= 0')
    _usage_error(capsys, gen_images.main, ['--network', str(tmp_path / 'nope'), '--seeds', '1'] + out,
                 'no such file or directory')
    _usage_error(capsys, gen_images.main, ['--network', u, '--seeds', '1', '--noise-mode', 'x'] + out,
                 "invalid choice: 'x'")
    bad_pkl = tmp_path / 'bad.pkl'
    bad_pkl.write_bytes(b'this is not a pickle')
    _usage_error(capsys, gen_images.main, ['--network', str(bad_pkl), '--seeds', '1'] + out, str(bad_pkl))
    assert not (tmp_path / 'o').exists() or _files(tmp_path / 'o') == []


@pytest.mark.slow
def test_gen_images_stylegan2_noise_and_transform(tmp_path):
    cfg = _cfg(arch='stylegan2')
    params, buffers = jax.jit(lambda k: generator.init(k, cfg))(jax.random.key(2))
    # Noise strengths start at zero; make the noise visible.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.5 if 'noise_strength' in jax.tree_util.keystr(path) else x, params)
    G = sampling.Generator(params, buffers, cfg)
    with pytest.raises(cli.ToolError, match='StyleGAN2 network'):
        gen_images.generate_images(G, '1', tmp_path / 'x', translate='0.5,0', progress=False)
    gen_images.generate_images(G, '3,4', tmp_path / 'r1', noise_mode='random', batch_size=4, progress=False)
    gen_images.generate_images(G, '3', tmp_path / 'r2', noise_mode='random', batch_size=4, progress=False)
    # Random noise is keyed by the seed alone: reproducible whatever else is in the batch ...
    assert (tmp_path / 'r1/seed0003.png').read_bytes() == (tmp_path / 'r2/seed0003.png').read_bytes()
    # ... and it matters: the same ws under another noise key give another image.
    ws = sampling.mapping(G, sampling.z_from_seeds([3, 3], 16), np.zeros([2, 0]), batch_size=4)
    imgs = sampling.synthesis(G, ws, noise_mode='random', noise_seeds=[3, 5], batch_size=4)
    np.testing.assert_array_equal(imgs[0], _png(tmp_path / 'r1/seed0003.png'))
    assert not np.array_equal(imgs[0], imgs[1])


def test_gen_images_official_golden_pixels(tmp_path):
    """Official G_sg3t_64: seed 102 with the golden transform gives the official image (z_transformed[0] is
    RandomState(102)'s first z_dim draws), to within one uint8 level, read through the CLI from an .pkl in the
    official structure (tests/pkl_fixtures.py) holding the golden weights."""
    d = golden.load('G_sg3t_64')
    np.testing.assert_allclose(sampling.z_from_seeds([102], 64)[0], d['z_transformed'][0], rtol=1e-6)
    p = golden.json_field(d, 'transform_params_json')
    argv = ['--seeds', '102', '--translate', '{},{}'.format(*p['translate']), '--rotate', str(p['angle']),
            '--outdir', str(tmp_path / 'out'), '--batch-size', '1']
    G_ema, _, _ = pkl_fixtures.golden_net('G_sg3t_64')
    network = pkl_fixtures.write_network_pkl(tmp_path / 'sg3t.pkl', {'G_ema': G_ema})
    gen_images.main(['--network', str(network)] + argv)
    ref = np.clip(golden.nchw_to_nhwc(d['img_transformed'][:1])[0] * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.abs(_png(tmp_path / 'out' / 'seed0102.png').astype(int) - ref).max() <= 1

#----------------------------------------------------------------------------
# gen_video.

@pytest.mark.filterwarnings('ignore:os.fork')
def test_gen_video_output_and_interpolation(nets, tmp_path, capsys):
    import imageio
    mp4 = tmp_path / 'v' / 'lerp.mp4'
    gen_video.main(['--network', str(nets['uncond']), '--seeds', '0-3', '--grid', '2x1', '--w-frames', '3',
                    '--trunc', '0.7', '--output', str(mp4)] + BATCH)
    assert _files(mp4.parent) == ['lerp.mp4']
    with imageio.get_reader(str(mp4)) as r:
        frames = [f for f in r]
    assert len(frames) == 2 * 3 and frames[0].shape == (16, 32, 3)          # K=4/2 keyframes x 3 frames, 2x1 grid
    # Cubic spline through the keyframes, periodic: it hits each keyframe and closes the loop.
    kf = gen_video.keyframe_seeds([0, 1, 2, 3], 2, 1)
    np.testing.assert_array_equal(kf, [[[0, 1], [2, 3]]])
    ws = np.random.RandomState(0).randn(3, 2, 4)
    f = gen_video.interpolator(ws)
    np.testing.assert_allclose(f(np.arange(3.0)), ws, atol=1e-12)
    np.testing.assert_allclose(f(np.array([2.5])), f(np.array([-0.5])), atol=1e-9)
    # Conditional networks need --class; seed counts must fill the grid.
    _usage_error(capsys, gen_video.main, ['--network', str(nets['cond']), '--seeds', '0-1',
                                          '--output', str(tmp_path / 'c.mp4')], 'must specify class label')
    _usage_error(capsys, gen_video.main, ['--network', str(nets['uncond']), '--seeds', '0-2', '--grid', '2x1',
                                          '--output', str(tmp_path / 'c.mp4')], 'must be divisible by the grid')
    _usage_error(capsys, gen_video.main, ['--network', str(nets['uncond']), '--seeds', '0', '--grid', '0x1',
                                          '--output', str(tmp_path / 'c.mp4')], "--grid '0x1'")
    gen_video.main(['--network', str(nets['cond']), '--seeds', '0-1', '--class', '1', '--w-frames', '2',
                    '--output', str(tmp_path / 'c.mp4')] + BATCH)
    assert (tmp_path / 'c.mp4').stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.mp4', 'v']

#----------------------------------------------------------------------------
# gen_style_mix.

def test_gen_style_mix_outputs(nets, tmp_path, capsys):
    G = nets['uncond_G']
    out = tmp_path / 'sm'
    num_ws = G.spec.num_ws
    gen_style_mix.main(['--network', str(nets['uncond']), '--rows', '85,100', '--cols', '55,821',
                        '--styles', f'0-{num_ws - 1}', '--outdir', str(out)] + BATCH)
    assert _files(out) == sorted(['85-85.png', '100-100.png', '55-55.png', '821-821.png', '85-55.png', '85-821.png',
                                  '100-55.png', '100-821.png', 'grid.png'])
    # Every style taken from the column seed: the mix is the column seed's image.
    np.testing.assert_array_equal(_png(out / '85-55.png'), _png(out / '55-55.png'))
    grid = _png(out / 'grid.png')
    assert grid.shape == (16 * 3, 16 * 3, 3)
    assert (grid[:16, :16] == 0).all()
    np.testing.assert_array_equal(grid[:16, 16:32], _png(out / '55-55.png'))
    np.testing.assert_array_equal(grid[32:48, :16], _png(out / '100-100.png'))
    np.testing.assert_array_equal(grid[32:48, 32:48], _png(out / '100-821.png'))
    out2 = tmp_path / 'sm2'
    gen_style_mix.main(['--network', str(nets['uncond']), '--rows', '85', '--cols', '55', '--styles', '0-1',
                        '--outdir', str(out2)] + BATCH)
    mix = _png(out2 / '85-55.png')
    assert not np.array_equal(mix, _png(out2 / '85-85.png')) and not np.array_equal(mix, _png(out2 / '55-55.png'))
    _usage_error(capsys, gen_style_mix.main, ['--network', str(nets['uncond']), '--rows', '1', '--cols', '2',
                                              '--styles', f'0-{num_ws}', '--outdir', str(out2)],
                 f'style indices must be in 0..{num_ws - 1}')

#----------------------------------------------------------------------------
# avg_spectra.

def test_power_spectrum_is_the_official_fft():
    rng = np.random.RandomState(0)
    for size, interp in [(8, 4), (7, 3)]:
        imgs = rng.randint(0, 256, (2, size, size, 3)).astype(np.uint8)
        win = avg_spectra.kaiser_window_2d(size, 8.0)
        np.testing.assert_allclose(np.square(win).sum(), 1.0)
        x = np.moveaxis((imgs.astype(np.float64) - 100) / 60, -1, 1) * win
        x = np.pad(x, [(0, 0), (0, 0), (0, size * (interp - 1)), (0, size * (interp - 1))])
        ref = np.square(np.abs(np.fft.fftn(x, axes=(2, 3)))).mean(axis=1).sum(axis=0)
        np.testing.assert_allclose(avg_spectra.power_spectrum(imgs, 100, 60, win, size * interp), ref,
                                   rtol=1e-10, atol=1e-10 * ref.max())
    np.testing.assert_array_equal(avg_spectra.select_indices(5, None, 0), np.arange(5))
    idx = np.arange(10)
    np.random.RandomState(3).shuffle(idx)
    np.testing.assert_array_equal(avg_spectra.select_indices(10, 4, 3), np.sort(idx[:4]))
    with pytest.raises(cli.ToolError, match='fewer than 6'):
        avg_spectra.select_indices(5, 6, 0)


def test_avg_spectra_cli(nets, tmp_path, capsys):
    net = str(nets['uncond'])
    dest = tmp_path / 's' / 'gen.npz'
    avg_spectra.main(['calc', '--source', net, '--dest', str(dest), '--mean', '127', '--std', '60', '--num', '6']
                     + BATCH)
    with np.load(dest) as d:
        spec, size = d['spectrum'], int(d['image_size'])
    assert size == 16 and spec.shape == (64, 64) and spec.dtype == np.float64
    # Known answer: the same images through the plain official formula.
    imgs = np.concatenate(list(avg_spectra.generated_images(nets['uncond_G'], 6, 0, batch_size=4)))
    x = np.moveaxis((imgs.astype(np.float64) - 127) / 60, -1, 1) * avg_spectra.kaiser_window_2d(16)
    x = np.pad(x, [(0, 0), (0, 0), (0, 48), (0, 48)])
    np.testing.assert_allclose(spec, np.square(np.abs(np.fft.fftn(x, axes=(2, 3)))).mean(1).mean(0), rtol=1e-9)
    # Images from a folder (the gen_images output), then stats, heatmap and slices.
    gen_images.main(['--network', net, '--seeds', '0-2', '--outdir', str(tmp_path / 'imgs')] + BATCH)
    avg_spectra.main(['calc', '--source', str(tmp_path / 'imgs'), '--dest', str(tmp_path / 's' / 'real.npz'),
                      '--mean', '127', '--std', '60'])
    avg_spectra.main(['stats', '--source', str(tmp_path / 'imgs')])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    px = np.stack([_png(tmp_path / f'imgs/seed{s:04d}.png') for s in range(3)]).astype(np.float64)
    assert line == f'--mean={px.mean():g} --std={px.std():g}'
    avg_spectra.main(['heatmap', str(dest), '--save', str(tmp_path / 'p' / 'heat.png')])
    avg_spectra.main(['slices', str(dest), str(tmp_path / 's' / 'real.npz'), '--save', str(tmp_path / 'p' / 'sl.png')])
    assert _files(tmp_path / 'p') == ['heat.png', 'sl.png'] and _files(tmp_path / 's') == ['gen.npz', 'real.npz']
    assert Image.open(tmp_path / 'p' / 'heat.png').size == (600, 480)
    _usage_error(capsys, avg_spectra.main, ['calc', '--source', net, '--dest', str(tmp_path / 'x.npz'),
                                            '--mean', '0', '--std', '1'], '--num is required')
    _usage_error(capsys, avg_spectra.main, ['calc', '--source', str(tmp_path / 'imgs'), '--dest',
                                            str(tmp_path / 'x.npz'), '--mean', '0', '--std', '1', '--num', '9'],
                 'fewer than 9 images')
    _usage_error(capsys, avg_spectra.main, ['heatmap', str(tmp_path / 'imgs' / 'seed0000.png'), '--save',
                                            str(tmp_path / 'h.png')], 'not an avg_spectra .npz')

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_gen_images_subprocess_smoke(nets, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    r = subprocess.run([sys.executable, '-m', 'sg3jax.gen_images', '--network', str(nets['uncond']),
                        '--seeds', '7', '--outdir', str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=1800)
    assert r.returncode == 0, r.stderr
    assert _files(tmp_path) == ['seed0007.png']
    r = subprocess.run([sys.executable, '-m', 'sg3jax.gen_images', '--network', str(nets['uncond']),
                        '--seeds', 'x', '--outdir', str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=1800)
    assert r.returncode == 2 and "--seeds 'x'" in r.stderr


def test_flag_values_may_start_with_a_minus(nets, tmp_path):
    """`--translate -0.3,0.25`, as the official (click) tool accepts it, is `--translate=-0.3,0.25`; a following
    flag is still a flag."""
    parser = gen_images.build_parser()
    a = cli.parse_args(parser, ['--network', 'n', '--seeds', '1', '--translate', '-0.3,0.25', '--rotate', '-5',
                                '--outdir', 'o'])
    assert (a.translate, a.rotate, a.outdir) == ('-0.3,0.25', -5.0, 'o')
    with pytest.raises(SystemExit):
        cli.parse_args(parser, ['--network', 'n', '--seeds', '--outdir', 'o'])
    net = str(nets['uncond'])
    gen_images.main(['--network', net, '--seeds', '5', '--translate', '-0.3,0.25', '--outdir', str(tmp_path / 'a')]
                    + BATCH)
    gen_images.main(['--network', net, '--seeds', '5', '--translate=-0.3,0.25', '--outdir', str(tmp_path / 'b')]
                    + BATCH)
    gen_images.main(['--network', net, '--seeds', '5', '--outdir', str(tmp_path / 'c')] + BATCH)
    np.testing.assert_array_equal(_png(tmp_path / 'a/seed0005.png'), _png(tmp_path / 'b/seed0005.png'))
    assert not np.array_equal(_png(tmp_path / 'a/seed0005.png'), _png(tmp_path / 'c/seed0005.png'))
